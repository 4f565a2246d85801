"""The coordinators' coverage map page and its static files."""
