"""GPS galleries for the retrieval models: read by geotag.io.gps_gallery (models read no files);
the names stay importable from here."""

from geotag.io.gps_gallery import default_gallery_path, geoclip_package_dir, load_gallery

__all__ = ["default_gallery_path", "geoclip_package_dir", "load_gallery"]
