//! A real PostgreSQL server (Debian's postgresql-15), started for one test.
//!
//! The server refuses to run as root, so `initdb` and `postgres` run as the unprivileged
//! `postgres` user (Debian's package creates it) in a temp folder this guard owns. It listens
//! on a unix socket in that folder only (no TCP port to race for); [`Postgres::url`] is the
//! URL the collector's `--db` takes. Drop stops the server (immediate shutdown) and removes
//! the folder, also when the test panics; the server also gets SIGQUIT if the thread that
//! started it dies without dropping it. `fsync` is off: tests never crash the machine, and
//! it makes `initdb` and every commit fast.

use std::{
    ffi::CString,
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// Where Debian puts the server's binaries.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The server's superuser (trust authentication on the socket).
pub const USER: &str = "edgeflow";

/// A running server; stopped and removed on drop.
pub struct Postgres {
    dir: PathBuf,
    child: Option<Child>,
}

/// The uid and gid of the unprivileged `postgres` user.
fn postgres_user() -> (u32, u32) {
    let name = CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "no `postgres` user: install Debian's postgresql (scripts/setup.sh)"
    );
    // SAFETY: non-null pointer from getpwnam.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

/// A command run as the `postgres` user, which gets SIGQUIT should its parent die.
fn as_postgres(bin: &str) -> Command {
    let (uid, gid) = postgres_user();
    let mut c = Command::new(Path::new(BIN).join(bin));
    c.uid(uid).gid(gid).stdin(Stdio::null());
    // SAFETY: prctl is async-signal-safe; runs in the child after the uid change (which
    // would otherwise clear the parent-death signal).
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            Ok(())
        });
    }
    c
}

impl Postgres {
    /// initdb + postgres in a fresh folder; returns once the server accepts connections.
    pub fn start() -> Postgres {
        Postgres::with_settings(&[])
    }

    /// Like [`Postgres::start`], with extra `-c name=value` server settings.
    pub fn with_settings(settings: &[&str]) -> Postgres {
        assert!(
            Path::new(BIN).join("postgres").exists(),
            "{BIN}/postgres missing: install Debian's postgresql (scripts/setup.sh)"
        );
        let dir = std::env::temp_dir().join(crate::unique("efpg"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut pg = Postgres { dir, child: None };
        let (uid, gid) = postgres_user();
        std::os::unix::fs::chown(&pg.dir, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&pg.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = pg.dir.join("data");
        let out = as_postgres("initdb")
            .args(["-D", data.to_str().unwrap(), "-U", USER])
            .args(["--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::File::create(pg.dir.join("postgres.log")).unwrap();
        std::os::unix::fs::chown(pg.dir.join("postgres.log"), Some(uid), Some(gid)).unwrap();
        let mut cmd = as_postgres("postgres");
        cmd.args(["-D", data.to_str().unwrap(), "-k", pg.dir.to_str().unwrap()])
            .args(["-c", "listen_addresses=", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"]);
        for s in settings {
            cmd.args(["-c", s]);
        }
        pg.child = Some(
            cmd.stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting postgres"),
        );
        pg.wait_ready();
        pg
    }

    /// Polls `pg_isready` until the server answers (at most 30 s).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(Path::new(BIN).join("pg_isready"))
                .args(["-q", "-h", self.dir.to_str().unwrap(), "-U", USER])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            if let Some(s) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("postgres exited ({s}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The folder holding the data, the socket and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The socket folder (the URL's `host`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// The URL of database `postgres` (it always exists).
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `db` (see [`Postgres::create_database`]).
    pub fn url_of(&self, db: &str) -> String {
        format!("postgres://{USER}@/{db}?host={}", self.dir.display())
    }

    /// Creates database `db` and returns its URL: one server, a database per store.
    pub fn create_database(&self, db: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
        self.url_of(db)
    }

    /// Runs `sql` in database `db` with psql; its output (unaligned, tuples only).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let psql = format!("{BIN}/psql");
        let out = crate::sh(&[
            &psql,
            "-h",
            self.dir.to_str().unwrap(),
            "-U",
            USER,
            "-d",
            db,
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGQUIT: immediate shutdown; the postmaster ends its backends and exits.
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGQUIT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL server shared by the tests of one binary that run at once: the first starts
/// it, the last to let go stops it (one `initdb` per binary, not per test). Each test makes
/// its own database on it (`pg.create_database`).
pub struct SharedPostgres {
    pub pg: Postgres,
    /// Dropped after `pg`: the thread that started the server (its parent-death signal
    /// follows that thread) ends once the server is stopped.
    _holder: mpsc::Sender<()>,
}

impl SharedPostgres {
    pub fn get() -> std::sync::Arc<SharedPostgres> {
        use std::sync::{Arc, Mutex, Weak};
        static SHARED: Mutex<Weak<SharedPostgres>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = shared.upgrade() {
            return s;
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (holder, done) = mpsc::channel::<()>();
            let _ = tx.send((Postgres::start(), holder));
            // Until every sender (the SharedPostgres) is gone.
            let _ = done.recv();
        });
        let (pg, holder) = rx.recv().expect("starting PostgreSQL failed");
        let s = Arc::new(SharedPostgres {
            pg,
            _holder: holder,
        });
        *shared = Arc::downgrade(&s);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_cleans_up() {
        let dir;
        {
            let pg = Postgres::start();
            dir = pg.dir().to_path_buf();
            let url = pg.create_database("t1");
            assert!(url.starts_with("postgres://edgeflow@/t1?host=/"), "{url}");
            assert_eq!(pg.psql("t1", "SELECT 40 + 2"), "42");
            assert!(dir.join(".s.PGSQL.5432").exists());
        }
        assert!(!dir.exists(), "the folder goes with the server");
    }
}
