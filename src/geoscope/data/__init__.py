"""Reading the world: images, datasets, overhead rasters. Nothing here learns."""
