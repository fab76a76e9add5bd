"""The HTTP interface: JSON under /api/v1, built by `inspect_app.api.app.create_app`."""
