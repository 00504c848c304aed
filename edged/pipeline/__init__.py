"""The job's pipeline: its stages in order (`stages`), what they hand each other (`state`), the one job
config (`config`), the one stage timer (`timer`), and `adapt()`, the library's entry point (`adapt`)."""
