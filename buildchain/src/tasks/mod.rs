//! The product graph: `iso` ← `populate_iso` ← {`images`, `packaging`, `salt_tree`, scripts,
//! `product.txt`}.

pub mod images;
pub mod packaging;
