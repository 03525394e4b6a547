//! ECMA-119 (ISO-9660) writer and reader with Rock Ridge and Joliet, plus isomd5sum.
//! (Being implemented: see issue 3.)
