//! A real Mosquitto broker (Debian's), started on a free loopback port for one test.

use std::{
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A running `mosquitto` on 127.0.0.1:`port`; killed on drop. `stop`/`start` simulate an
/// outage on the same port.
pub struct Mosquitto {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Extra lines for mosquitto.conf (TLS, auth...).
    extra: String,
    /// A complete configuration written elsewhere (`scripts/provision.sh init`), used as is.
    conf: Option<PathBuf>,
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::with_config("")
    }

    /// Starts with extra configuration lines (the listener line is written by us).
    pub fn with_config(extra: &str) -> Mosquitto {
        let dir = std::env::temp_dir().join(crate::unique("efmq"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = Mosquitto {
            port: free_port(),
            dir,
            child: None,
            extra: extra.to_string(),
            conf: None,
        };
        m.resume();
        m
    }

    /// Runs `dir/mosquitto.conf` as written (its listener must be 127.0.0.1:`port`); the
    /// broker's log goes to `dir/mosquitto.log`. `dir` is removed on drop.
    pub fn with_conf_file(dir: PathBuf, port: u16) -> Mosquitto {
        let mut m = Mosquitto {
            port,
            conf: Some(dir.join("mosquitto.conf")),
            dir,
            child: None,
            extra: String::new(),
        };
        m.resume();
        m
    }

    /// What the broker logged so far (only with [`Mosquitto::with_conf_file`]).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// SIGHUP: the broker reads its password and ACL files again.
    pub fn reload(&self) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGHUP) };
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The folder for this broker's files (config, certificates a test writes).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Stops the broker (an outage); `resume` brings it back on the same port.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let (conf, log) = match &self.conf {
            Some(c) => {
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("mosquitto.log"))
                    .unwrap();
                (c.clone(), Stdio::from(log))
            }
            None => {
                let conf = self.dir.join("mosquitto.conf");
                let mut text = format!("listener {} 127.0.0.1\npersistence false\n", self.port);
                if !self.extra.contains("allow_anonymous") {
                    text.push_str("allow_anonymous true\n");
                }
                text.push_str(&self.extra);
                std::fs::write(&conf, text).unwrap();
                (conf, Stdio::null())
            }
        };
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting mosquitto (apt-get install mosquitto; scripts/setup.sh does)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_stops_and_resumes_on_the_same_port() {
        let mut m = Mosquitto::start();
        let port = m.port;
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        m.stop();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        m.resume();
        assert_eq!(m.port, port);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    }
}
