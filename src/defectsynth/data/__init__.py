"""Data: MVTec-layout indexing, the built-in procedural products, caching, augmentation."""
