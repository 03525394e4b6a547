//! Progress bars on a real terminal (issue 15, item 11): the build runs inside a tmux pane and
//! the whole pane, scrollback included, is captured. Bars must never run into task lines, no
//! bar may stay frozen once its task is done, local image builds show no empty `0 B/0 B` bar,
//! and the mastering bar counts up to the image size.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_buildchain");

/// A tmux server on a private socket, killed (that server only) on drop.
struct Tmux {
    tmux: std::path::PathBuf,
    socket: String,
}

impl Tmux {
    fn start(cwd: &Path) -> Self {
        let tmux = testkit::require_tool("tmux");
        let socket = format!("buildchain-progress-{}", std::process::id());
        let t = Tmux { tmux, socket };
        testkit::run_ok(
            t.cmd()
                .args([
                    "-f",
                    "/dev/null",
                    "new-session",
                    "-d",
                    "-x",
                    "200",
                    "-y",
                    "50",
                    "-c",
                ])
                .arg(cwd)
                .arg("sh"),
        );
        t.wait_for_prompt();
        t
    }
    /// Waits until the shell has printed its prompt: keys typed earlier are echoed before the
    /// prompt, which then lands in front of the build's first line.
    fn wait_for_prompt(&self) {
        for _ in 0..300 {
            if !self.capture().trim().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the shell in tmux printed no prompt");
    }
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.tmux);
        c.args(["-L", &self.socket]);
        c
    }
    fn type_line(&self, line: &str) {
        testkit::run_ok(self.cmd().args(["send-keys", "-l", line]));
        testkit::run_ok(self.cmd().args(["send-keys", "Enter"]));
    }
    fn capture(&self) -> String {
        let out = testkit::run_ok(self.cmd().args(["capture-pane", "-p", "-S", "-"]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").output();
    }
}

/// Waits for `marker` to be written by the shell (a guard against a hung build, not a timing
/// assertion).
fn wait_for(marker: &Path) -> String {
    for _ in 0..3000 {
        if let Ok(s) = std::fs::read_to_string(marker) {
            if s.ends_with('\n') {
                return s;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the build in tmux did not finish");
}

#[test]
fn bars_are_cleared_and_never_run_into_log_lines() {
    let repo = tempfile::tempdir().unwrap();
    testkit::copy_product_repo(repo.path());
    let store = tempfile::tempdir().unwrap();
    let marker = repo.path().join("exit-status");
    let tmux = Tmux::start(repo.path());
    tmux.type_line(&format!(
        "env SOURCE_DATE_EPOCH=1700000000 BUILDCHAIN_STORE='{}' BUILD_HOST=test-host '{BIN}' \
         iso; echo \"EXIT=$?\" > '{}'",
        store.path().display(),
        marker.display()
    ));
    assert_eq!(wait_for(&marker), "EXIT=0\n");
    // tmux reads the pane's output asynchronously: wait until it shows the summary line.
    let mut screen = tmux.capture();
    for _ in 0..600 {
        if screen
            .lines()
            .any(|l| l.contains(" tasks: ") && l.contains(" ran"))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        screen = tmux.capture();
    }
    let all: Vec<&str> = screen.lines().map(str::trim_end).collect();
    let typed = all
        .iter()
        .rposition(|l| l.contains("EXIT=$?"))
        .expect("the typed command");
    let lines: Vec<&str> = all[typed + 1..]
        .iter()
        .copied()
        .filter(|l| !l.is_empty())
        .collect();
    assert!(!lines.is_empty(), "{screen}");
    // The summary says how many tasks ran: each printed SUCCESS once, and every STARTED task
    // (those with an action) finished with a SUCCESS line of its own.
    let summary = lines
        .iter()
        .find(|l| l.contains(" tasks: "))
        .unwrap_or_else(|| panic!("no summary line\n{screen}"));
    let total: usize = summary.split(' ').next().unwrap().parse().unwrap();
    assert!(
        summary.starts_with(&format!(
            "{total} tasks: {total} ran, 0 up to date, 0 failed"
        )),
        "{screen}"
    );
    let task_of = |l: &str, label: &str| {
        l.strip_prefix(label)
            .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
    };
    let started: BTreeSet<String> = lines
        .iter()
        .filter_map(|l| task_of(l, "STARTED "))
        .collect();
    let succeeded: Vec<String> = lines
        .iter()
        .filter_map(|l| task_of(l, "SUCCESS "))
        .collect();
    assert_eq!(succeeded.len(), total, "{screen}");
    let succeeded_set: BTreeSet<String> = succeeded.iter().cloned().collect();
    assert_eq!(
        succeeded_set.len(),
        total,
        "a task succeeded twice\n{screen}"
    );
    assert!(started.len() > total / 2, "{screen}");
    assert!(started.is_subset(&succeeded_set), "{screen}");
    for l in &lines {
        let known = [
            "STARTED ",
            "SUCCESS ",
            "iso: ",
            "populate_iso:unsigned: unsigned build",
            "completeness: every referenced image and RPM dependency is shipped",
        ]
        .iter()
        .any(|p| l.starts_with(p))
            || *l == *summary
            || *l == "#"
            || *l == "$";
        assert!(known, "left on the terminal: {l:?}\n{screen}");
        assert!(!l.contains("0 B/0 B"), "{screen}");
        assert!(!l.contains("mastering"), "frozen bar: {l:?}\n{screen}");
        assert!(!l.contains("ETA"), "frozen bar: {l:?}\n{screen}");
        for label in ["STARTED", "SUCCESS"] {
            if let Some(i) = l.find(label) {
                assert_eq!(i, 0, "a bar ran into a task line: {l:?}\n{screen}");
            }
        }
    }
    assert!(
        lines.contains(&"iso: wrote dist/metalk8s-130.0.0-dev.iso"),
        "{screen}"
    );
}

#[test]
fn mastering_progress_total_is_the_image_size() {
    let tree = tempfile::tempdir().unwrap();
    let mut data = 0u64;
    for i in 0..20u64 {
        let bytes = testkit::pseudo_random_bytes(i, 3000 + 700 * i as usize);
        data += bytes.len() as u64;
        std::fs::write(tree.path().join(format!("f{i}")), bytes).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let iso = out.path().join("t.iso");
    let hub = buildchain::engine::ProgressHub::quiet();
    let bar = hub.start("iso", None, "mastering");
    let report =
        buildchain::isofile::master_atomic_progress(tree.path(), &iso, "T", true, 0, &bar).unwrap();
    assert_eq!(report.size, std::fs::metadata(&iso).unwrap().len());
    assert_eq!(bar.total(), Some(report.size));
    assert_eq!(bar.done(), report.size);
    // The old total (the sum of the file sizes) was far below what the bar counts.
    assert!(data < report.size, "{data} {}", report.size);
}
