//! Read-only file trees the validator works on: a directory ([`DirTree`]) or an ISO-9660 image
//! ([`IsoTree`], through `iso9660_writer::IsoReader`).

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use iso9660_writer::{EntryKind, IsoReader, Namespace};

/// Kind of a [`TreeEntry`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link, with its target as stored.
    Symlink(String),
    /// Device, FIFO, socket or anything else.
    Other,
}

/// One entry of a tree.
#[derive(Clone, Debug)]
pub struct TreeEntry {
    /// Path relative to the root, `/`-separated, no leading `/`.
    pub path: String,
    /// Kind.
    pub kind: Kind,
    /// Size in bytes (files).
    pub size: u64,
    /// Identity of the stored content (ISO extent sector, or device+inode): two entries with the
    /// same identity have the same bytes.
    pub identity: Option<u64>,
    /// Implementation-specific handle (index into the implementation's own list).
    pub handle: usize,
}

/// A read-only file tree.
pub trait FileTree {
    /// Every entry (directories included), in a stable order.
    fn entries(&mut self) -> Result<Vec<TreeEntry>>;
    /// Streams the content of a file entry into `out`; returns the bytes written.
    fn stream(&mut self, entry: &TreeEntry, out: &mut dyn Write) -> Result<u64>;
    /// Reads a whole (small) file, refusing more than `limit` bytes.
    fn read_small(&mut self, entry: &TreeEntry, limit: u64) -> Result<Vec<u8>> {
        if entry.size > limit {
            bail!("{} is {} bytes (limit {limit})", entry.path, entry.size);
        }
        let mut v = Vec::with_capacity(entry.size as usize);
        self.stream(entry, &mut v)?;
        Ok(v)
    }
}

/// A directory on disk (symlinks are not followed).
pub struct DirTree {
    root: PathBuf,
    paths: Vec<PathBuf>,
}

impl DirTree {
    /// A tree rooted at `root`.
    pub fn new(root: &Path) -> Self {
        DirTree {
            root: root.to_path_buf(),
            paths: Vec::new(),
        }
    }
}

impl FileTree for DirTree {
    fn entries(&mut self) -> Result<Vec<TreeEntry>> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let mut out = Vec::new();
        self.paths.clear();
        for e in walkdir::WalkDir::new(&self.root)
            .follow_links(false)
            .min_depth(1)
            .sort_by_file_name()
        {
            let e = e.with_context(|| format!("cannot walk {}", self.root.display()))?;
            let md = e
                .path()
                .symlink_metadata()
                .with_context(|| format!("cannot stat {}", e.path().display()))?;
            let rel = e
                .path()
                .strip_prefix(&self.root)
                .map_err(|_| anyhow!("{} is outside the root", e.path().display()))?;
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_file() {
                Kind::File
            } else if ft.is_symlink() {
                let t = std::fs::read_link(e.path())
                    .with_context(|| format!("cannot read link {}", e.path().display()))?;
                Kind::Symlink(t.to_string_lossy().into_owned())
            } else {
                let _ = ft.is_block_device();
                Kind::Other
            };
            out.push(TreeEntry {
                path: rel.to_string_lossy().replace('\\', "/"),
                size: if kind == Kind::File { md.len() } else { 0 },
                identity: (kind == Kind::File).then(|| md.dev().rotate_left(40) ^ md.ino()),
                kind,
                handle: self.paths.len(),
            });
            self.paths.push(e.path().to_path_buf());
        }
        Ok(out)
    }

    fn stream(&mut self, entry: &TreeEntry, out: &mut dyn Write) -> Result<u64> {
        let p = self
            .paths
            .get(entry.handle)
            .ok_or_else(|| anyhow!("unknown entry {}", entry.path))?;
        let f = File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
        let mut r = BufReader::with_capacity(1 << 20, f);
        std::io::copy(&mut r, out).with_context(|| format!("cannot read {}", p.display()))
    }
}

/// An ISO-9660 image, read with Rock Ridge names (else Joliet, else plain names).
pub struct IsoTree<R: Read + std::io::Seek> {
    /// The reader.
    pub reader: IsoReader<R>,
    raw: Vec<iso9660_writer::Entry>,
}

impl IsoTree<BufReader<File>> {
    /// Opens the image at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Self::from_reader(BufReader::with_capacity(1 << 20, f))
    }
}

impl<R: Read + std::io::Seek> IsoTree<R> {
    /// An image over any `Read + Seek`.
    pub fn from_reader(r: R) -> Result<Self> {
        let reader = IsoReader::open(r).map_err(|e| anyhow!("{e}"))?;
        Ok(IsoTree {
            reader,
            raw: Vec::new(),
        })
    }

    /// Paths of the plain ISO-9660 (primary, no Rock Ridge) namespace, as `isoinfo` without `-R`
    /// sees them (`;1` removed).
    pub fn plain_paths(&mut self) -> Result<Vec<String>> {
        Ok(self
            .reader
            .walk_namespace(Namespace::Plain)
            .map_err(|e| anyhow!("{e}"))?
            .into_iter()
            .map(|e| e.path)
            .collect())
    }
}

impl<R: Read + std::io::Seek> FileTree for IsoTree<R> {
    fn entries(&mut self) -> Result<Vec<TreeEntry>> {
        self.raw = self.reader.walk().map_err(|e| anyhow!("{e}"))?;
        Ok(self
            .raw
            .iter()
            .enumerate()
            .map(|(i, e)| TreeEntry {
                path: e.path.clone(),
                kind: match &e.kind {
                    EntryKind::File => Kind::File,
                    EntryKind::Dir => Kind::Dir,
                    EntryKind::Symlink(t) => Kind::Symlink(t.clone()),
                    EntryKind::Other => Kind::Other,
                },
                size: e.size,
                identity: e
                    .extents
                    .first()
                    .filter(|_| e.size > 0)
                    .map(|x| (x.lba as u64) << 32 | (e.extents.len() as u64 & 0xffff_ffff)),
                handle: i,
            })
            .collect())
    }

    fn stream(&mut self, entry: &TreeEntry, out: &mut dyn Write) -> Result<u64> {
        let raw = self
            .raw
            .get(entry.handle)
            .ok_or_else(|| anyhow!("unknown entry {}", entry.path))?;
        self.reader
            .read_file(raw, out)
            .map_err(|e| anyhow!("{}: {e}", entry.path))
    }
}
