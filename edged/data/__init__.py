"""Task data: in-memory datasets, splits, batching, preprocessing, bundled datasets, upload formats."""
