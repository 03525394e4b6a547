//! Product metadata: `product.txt`, `versions.json`, template rendering.
