"""The control panel's page, script and style (package data, served by control/panel_routes.py)."""
