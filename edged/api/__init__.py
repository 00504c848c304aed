"""The HTTP API: `create_app(settings)` in `edged.api.app`."""
