"""geotag: geolocate photos in bulk with published geolocation models."""

__version__ = "0.1.0"
