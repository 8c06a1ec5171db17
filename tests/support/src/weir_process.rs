//! `weir run` as a child process in a temporary directory, with its stdout and stderr in
//! files the test can watch while it runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running `weir run`.
pub struct WeirProcess {
    child: Child,
    /// Working directory (pipeline file, outputs).
    pub dir: tempfile::TempDir,
}

/// The `weir` binary cargo built for the running test or bench: it lies next to the
/// `deps/` directory that holds the test executable.
pub fn weir_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the test executable");
    let mut dir = exe.parent().expect("the test executable's directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("the profile directory");
    }
    dir.join(format!("weir{}", std::env::consts::EXE_SUFFIX))
}

/// `weir run pipeline.sql ARGS` in `dir`, its output appended to `stdout.txt` and
/// `stderr.txt` there.
fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let append = |name: &str| {
        std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .unwrap()
    };
    Command::new(weir_bin())
        .args(["run", "pipeline.sql"])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(append("stdout.txt"))
        .stderr(append("stderr.txt"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

impl WeirProcess {
    /// Writes `pipeline` to `pipeline.sql` and runs it with `env` added to the environment.
    pub fn start(pipeline: &str, env: &[(&str, &str)]) -> WeirProcess {
        Self::start_with(pipeline, &[], env)
    }

    /// As [`WeirProcess::start`], with more arguments after `run pipeline.sql`.
    pub fn start_with(pipeline: &str, args: &[&str], env: &[(&str, &str)]) -> WeirProcess {
        Self::start_with_files(pipeline, &[], args, env)
    }

    /// As [`WeirProcess::start_with`], with `files` (name, contents) written into the
    /// working directory first.
    pub fn start_with_files(
        pipeline: &str,
        files: &[(&str, &[u8])],
        args: &[&str],
        env: &[(&str, &str)],
    ) -> WeirProcess {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pipeline.sql"), pipeline).unwrap();
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        let child = spawn(dir.path(), args, env);
        WeirProcess { child, dir }
    }

    /// Starts `weir run pipeline.sql ARGS` again in the same directory once the previous
    /// process has exited (or was killed); its output is appended to the same files.
    pub fn respawn(&mut self, args: &[&str], env: &[(&str, &str)]) {
        assert!(!self.is_running(), "the previous weir still runs");
        self.child = spawn(self.dir.path(), args, env);
    }

    /// Kills the process with SIGKILL (a crash, a power cut) and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A file in the working directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Everything logged so far.
    pub fn stderr(&self) -> String {
        read(&self.path("stderr.txt"))
    }

    /// Everything printed so far.
    pub fn stdout(&self) -> String {
        read(&self.path("stdout.txt"))
    }

    /// Stdout's lines parsed as JSON (the stdout sink with format = 'ndjson').
    pub fn rows(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until `done(self)` holds, failing after `timeout` with the logs.
    #[track_caller]
    pub fn wait_for(&mut self, what: &str, timeout: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "weir exited ({status}) while waiting for {what}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\nstderr:\n{}\nstdout:\n{}",
                self.stderr(),
                self.stdout()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits until the log holds `needle` at least `n` times.
    #[track_caller]
    pub fn wait_log(&mut self, needle: &str, n: usize) {
        self.wait_for(
            &format!("{n}× '{needle}' in the log"),
            Duration::from_secs(30),
            |w| w.stderr().matches(needle).count() >= n,
        );
    }

    /// Waits until stdout holds at least `n` JSON rows.
    #[track_caller]
    pub fn wait_rows(&mut self, n: usize) {
        self.wait_for(&format!("{n} rows"), Duration::from_secs(60), |w| {
            w.rows().len() >= n
        });
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`, `TERM`).
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(mut self) -> (ExitStatus, Self) {
        self.signal("TERM");
        let status = self.wait_exit(Duration::from_secs(30));
        (status, self)
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("weir did not exit:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
