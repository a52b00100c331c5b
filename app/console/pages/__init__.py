"""The console's pages, one module each; app/console/routes.py assembles them."""
