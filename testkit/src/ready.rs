//! Waiting for an agent process to say it is ready, keeping its stderr for the report.

use std::{
    io::{BufRead, BufReader, Read},
    process::{Child, ChildStderr},
    sync::mpsc,
    thread::JoinHandle,
    time::Duration,
};

/// Reads `stderr` on a thread until it closes, and blocks until a line says
/// "edgeflow: ready". If that does not come within 30 s, kills `child` and panics with what it
/// wrote. Returns the thread, whose result is the whole stderr.
pub fn await_ready(child: &mut Child, stderr: ChildStderr, what: &str) -> JoinHandle<String> {
    let (rx, err) = watch_lines(stderr, "edgeflow: ready");
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not become ready:\n{}", err.join().unwrap());
    }
    err
}

/// Reads `from` line by line on a thread until it closes; the receiver hears of each line
/// holding `needle`. The thread's result is everything read.
pub fn watch_lines(
    from: impl Read + Send + 'static,
    needle: &'static str,
) -> (mpsc::Receiver<()>, JoinHandle<String>) {
    let (tx, rx) = mpsc::channel();
    let all = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if line.contains(needle) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    (rx, all)
}
