"""API routers, one module per resource; `edged.api.app.ROUTERS` lists those served."""
