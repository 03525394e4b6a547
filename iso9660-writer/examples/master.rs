//! `cargo run --example master -- SRC OUT.iso [VOLID]`: masters a directory (with the MD5 implant).
fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 3 {
        eprintln!("usage: master SRC OUT.iso [VOLID]");
        std::process::exit(2);
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&a[2])
        .expect("create output");
    let opts = iso9660_writer::MasterOptions {
        volume_id: a.get(3).cloned().unwrap_or_else(|| "TEST".into()),
        timestamp: 1_700_000_000,
        implant_md5: true,
        progress: None,
        keep_modes: false,
    };
    match iso9660_writer::master(std::path::Path::new(&a[1]), &mut f, &opts) {
        Ok(r) => println!("{r:?}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
