//! Engine behaviour: dependency order, parallelism, failure propagation, value inputs,
//! stale-output pruning, wildcard selection, up-to-date detection with touched files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use buildchain::engine::{self, Graph, Reporter, RunOptions, Status, Task};

fn opts(root: &Path, jobs: usize) -> RunOptions {
    let mut o = RunOptions::new(&root.join("_build"), root);
    o.jobs = jobs;
    o.reporter = Reporter::Silent;
    o.progress_bars = false;
    o
}

fn status(summary: &engine::RunSummary, name: &str) -> Status {
    summary
        .tasks
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no result for {name}: {:?}", summary.tasks))
        .status
}

fn writer(out: PathBuf, text: &'static str, log: Arc<Mutex<Vec<String>>>, name: &str) -> Task {
    let n = name.to_string();
    let o = out.clone();
    Task::new(name).output(&out).action(move |_| {
        log.lock().unwrap().push(n.clone());
        buildchain::fsutil::write_atomic(&o, text.as_bytes())
    })
}

#[test]
fn dependencies_run_first_and_second_run_skips() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("_build");
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut g = Graph::new();
    g.add(writer(b.join("a"), "a", log.clone(), "a")).unwrap();
    g.add(
        writer(b.join("b"), "b", log.clone(), "b")
            .dep("a")
            .input_file(b.join("a")),
    )
    .unwrap();
    g.add(
        writer(b.join("c"), "c", log.clone(), "c")
            .dep("b")
            .input_file(b.join("b")),
    )
    .unwrap();
    let s = engine::run(&g, &["c".into()], opts(dir.path(), 4)).unwrap();
    assert!(s.ok);
    assert_eq!(*log.lock().unwrap(), vec!["a", "b", "c"]);
    let s = engine::run(&g, &["c".into()], opts(dir.path(), 4)).unwrap();
    assert!(s.ok);
    for n in ["a", "b", "c"] {
        assert_eq!(status(&s, n), Status::Skipped, "{n}");
    }
    assert_eq!(log.lock().unwrap().len(), 3);
    // The build log is the log of the last run that did something (the no-op run left it).
    let logj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("build.log")).unwrap()).unwrap();
    assert_eq!(logj["result"], "success");
}

#[test]
fn independent_tasks_run_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let mut g = Graph::new();
    for n in ["x", "y"] {
        let bar = barrier.clone();
        let out = dir.path().join("_build").join(n);
        g.add(Task::new(n).output(&out).action(move |_| {
            // Both tasks must be inside their action at the same time to pass the barrier; with
            // a single worker this would deadlock, so a watchdog thread fails the test instead.
            bar.wait();
            buildchain::fsutil::write_atomic(&out, b"1")
        }))
        .unwrap();
    }
    let done = Arc::new(AtomicUsize::new(0));
    let d2 = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        if d2.load(Ordering::SeqCst) == 0 {
            eprintln!("tasks did not run concurrently with -j 2");
            std::process::exit(101);
        }
    });
    let s = engine::run(&g, &["x".into(), "y".into()], opts(dir.path(), 2)).unwrap();
    done.store(1, Ordering::SeqCst);
    assert!(s.ok);
}

#[test]
fn failure_blocks_dependents_and_lets_independent_work_finish() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("_build");
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut g = Graph::new();
    g.add(Task::new("bad").action(|_| anyhow::bail!("compiler said: boom at line 3")))
        .unwrap();
    g.add(writer(b.join("child"), "c", log.clone(), "child").dep("bad"))
        .unwrap();
    g.add(writer(b.join("grandchild"), "g", log.clone(), "grandchild").dep("child"))
        .unwrap();
    g.add(writer(b.join("other"), "o", log.clone(), "other"))
        .unwrap();
    let s = engine::run(
        &g,
        &["grandchild".into(), "other".into()],
        opts(dir.path(), 1),
    )
    .unwrap();
    assert!(!s.ok);
    assert_eq!(status(&s, "bad"), Status::Error);
    assert!(s
        .tasks
        .iter()
        .any(|t| t.error.as_deref().unwrap_or("").contains("boom at line 3")));
    assert_eq!(status(&s, "child"), Status::Blocked);
    assert_eq!(status(&s, "grandchild"), Status::Blocked);
    assert_eq!(status(&s, "other"), Status::Success);
    assert_eq!(*log.lock().unwrap(), vec!["other"]);
}

#[test]
fn value_inputs_and_touched_files() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("_build");
    let src = dir.path().join("src.txt");
    std::fs::write(&src, "hello").unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let graph = |version: &str| {
        let mut g = Graph::new();
        let r = runs.clone();
        let out = b.join("out");
        let v = version.to_string();
        g.add(
            Task::new("t")
                .input_file(&src)
                .value("version", version)
                .output(&out)
                .action(move |_| {
                    r.fetch_add(1, Ordering::SeqCst);
                    buildchain::fsutil::write_atomic(&out, v.as_bytes())
                }),
        )
        .unwrap();
        g
    };
    let g1 = graph("1.0");
    engine::run(&g1, &["t".into()], opts(dir.path(), 1)).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Touch without changing content: no re-run.
    let f = std::fs::File::options().write(true).open(&src).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    let s = engine::run(&g1, &["t".into()], opts(dir.path(), 1)).unwrap();
    assert_eq!(status(&s, "t"), Status::Skipped);
    // A changed value re-runs, and `info` says why before the run.
    let g2 = graph("2.0");
    let (text, up) = engine::verbs::info(&g2, "t", opts(dir.path(), 1)).unwrap();
    assert!(!up);
    assert!(text.contains("changed value `version`"), "{text}");
    engine::run(&g2, &["t".into()], opts(dir.path(), 1)).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    // Changed content re-runs and names the file.
    std::fs::write(&src, "world").unwrap();
    let (text, _) = engine::verbs::info(&g2, "t", opts(dir.path(), 1)).unwrap();
    assert!(text.contains("changed file src.txt"), "{text}");
    // A modified output re-runs too.
    engine::run(&g2, &["t".into()], opts(dir.path(), 1)).unwrap();
    std::fs::write(b.join("out"), "tampered").unwrap();
    let (text, _) = engine::verbs::info(&g2, "t", opts(dir.path(), 1)).unwrap();
    assert!(text.contains("output modified: _build/out"), "{text}");
}

#[test]
fn outputs_no_longer_produced_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("_build");
    let graph = |tags: &[&str], with_old_task: bool| {
        let mut g = Graph::new();
        let tags: Vec<String> = tags.iter().map(|s| s.to_string()).collect();
        let base = b.join("images");
        g.add(
            Task::new("images:x")
                .value("tags", tags.join(","))
                .action(move |ctx| {
                    for t in &tags {
                        let p = base.join("x").join(t).join("manifest.json");
                        buildchain::fsutil::write_atomic(&p, t.as_bytes())?;
                        ctx.add_output(&p);
                    }
                    Ok(())
                }),
        )
        .unwrap();
        if with_old_task {
            let p = b.join("images/old/1.0/manifest.json");
            g.add(
                Task::new("images:old")
                    .output(&p)
                    .action(move |_| buildchain::fsutil::write_atomic(&p, b"old")),
            )
            .unwrap();
        }
        g
    };
    let g = graph(&["1.0", "1.1"], true);
    engine::run(
        &g,
        &engine::expand(&g, &["images:*".into()]).unwrap(),
        opts(dir.path(), 2),
    )
    .unwrap();
    assert!(b.join("images/x/1.0/manifest.json").exists());
    assert!(b.join("images/old/1.0/manifest.json").exists());
    // Version bump: the old tag disappears; a task dropped from the graph loses its outputs.
    let g = graph(&["1.1", "1.2"], false);
    let s = engine::run(&g, &["images:x".into()], opts(dir.path(), 2)).unwrap();
    assert!(!b.join("images/x/1.0").exists());
    assert!(b.join("images/x/1.2/manifest.json").exists());
    assert!(!b.join("images/old").exists(), "pruned: {:?}", s.pruned);
}

#[test]
fn wildcard_selection_and_unknown_tasks() {
    let mut g = Graph::new();
    for n in [
        "packaging:a/rpm",
        "packaging:b/rpm",
        "packaging:a/repodata",
        "images:z",
    ] {
        g.add(Task::new(n)).unwrap();
    }
    assert_eq!(
        engine::expand(&g, &["packaging:*/rpm".into()]).unwrap(),
        vec!["packaging:a/rpm", "packaging:b/rpm"]
    );
    let e = engine::expand(&g, &["packagin:*".into()]).unwrap_err();
    assert!(e.to_string().contains("no task matches"), "{e}");
    let mut g2 = Graph::new();
    g2.add(Task::new("a").dep("missing")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = engine::run(&g2, &["a".into()], opts(dir.path(), 1)).unwrap_err();
    assert!(
        e.to_string()
            .contains("depends on unknown task \"missing\""),
        "{e}"
    );
    let mut g3 = Graph::new();
    g3.add(Task::new("a").dep("b")).unwrap();
    g3.add(Task::new("b").dep("a")).unwrap();
    let e = engine::run(&g3, &["a".into()], opts(dir.path(), 1)).unwrap_err();
    assert!(e.to_string().contains("cycle"), "{e}");
}

#[test]
fn dry_run_says_what_would_run_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("_build/o");
    let o = out.clone();
    let mut g = Graph::new();
    g.add(
        Task::new("t")
            .output(&out)
            .action(move |_| buildchain::fsutil::write_atomic(&o, b"x")),
    )
    .unwrap();
    let mut op = opts(dir.path(), 1);
    op.dry_run = true;
    let s = engine::run(&g, &["t".into()], op).unwrap();
    assert_eq!(status(&s, "t"), Status::WouldRun);
    assert_eq!(s.tasks[0].reasons, vec!["never ran successfully"]);
    assert!(!out.exists());
}
