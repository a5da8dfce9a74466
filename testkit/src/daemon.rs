//! Someone else's server (nfcapd, nfacctd, tcpdump, a collector) run inside a test namespace:
//! output to a log file, stopped by signal (bounded) and killed on drop, also when the test
//! panics.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Daemon {
    child: Option<Child>,
    pub name: String,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `args` inside namespace `ns` (`ip netns exec` execs it in place, so the pid
    /// is the program's); stdout and stderr go to `log`.
    pub fn start_in(ns: &str, args: &[&str], log: &Path) -> Daemon {
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {args:?}: {e}"));
        Daemon {
            child: Some(child),
            name: args[0].to_string(),
            log: log.to_path_buf(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if it has exited already.
    pub fn assert_running(&mut self) {
        if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("{} exited with {s}:\n{}", self.name, self.log_text());
        }
    }

    /// Sends `sig` and waits (at most 10 s) for the exit; returns the log.
    pub fn stop(mut self, sig: i32) -> String {
        let mut child = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not stop:\n{}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.log_text()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
