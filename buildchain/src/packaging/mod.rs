//! Packages: RPMs built from declarative definitions, pinned third-party RPMs, yum repodata.
//! (Being implemented: see issue 6.)
