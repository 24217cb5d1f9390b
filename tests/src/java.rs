//! The Java publisher of `tests/java`: publishes what yudao's and RuoYi-Vue-Plus's senders
//! publish, serialized by Jackson configured as those frameworks configure it. Compiled with
//! `javac` against Debian's Jackson and RabbitMQ client jars (`scripts/setup.sh` installs
//! them) once per test process, and driven one command per line over stdin.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout},
};

use crate::{PATIENCE, guests::repo_root};

/// The jars the publisher is compiled and run with (Debian's `/usr/share/java`).
const JARS: [&str; 5] = [
    "jackson-databind.jar",
    "jackson-core.jar",
    "jackson-annotations.jar",
    "amqp-client.jar",
    "slf4j-api.jar",
];
const JAR_DIR: &str = "/usr/share/java";

fn classpath(classes: &Path) -> String {
    let mut parts = vec![classes.display().to_string()];
    parts.extend(JARS.iter().map(|jar| format!("{JAR_DIR}/{jar}")));
    parts.join(":")
}

/// Fails the test, naming what is missing, unless `javac` and the jars are here
/// (`scripts/setup.sh` installs them); returns true so callers read as a precondition.
pub fn require_java() -> bool {
    let javac = Command::new("javac")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let missing: Vec<&str> = JARS
        .iter()
        .copied()
        .filter(|j| !Path::new(JAR_DIR).join(j).is_file())
        .collect();
    assert!(
        javac && missing.is_empty(),
        "the ingest tests need javac and {JAR_DIR}/{{{}}} (scripts/setup.sh installs them); javac found: {javac}",
        missing.join(",")
    );
    true
}

/// Compiles `tests/java/src` once per process; returns the classes folder.
fn classes() -> &'static Path {
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let out = tempfile::tempdir().expect("temp dir").keep();
        let src = repo_root().join("tests/java/src");
        let mut sources = Vec::new();
        let mut dirs = vec![src];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("java sources") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "java") {
                    sources.push(path);
                }
            }
        }
        let status = Command::new("javac")
            .args(["-nowarn", "-XDsuppressNotes", "-d"])
            .arg(&out)
            .args(["-cp", &classpath(Path::new("."))])
            .args(&sources)
            .status()
            .expect("javac runs");
        assert!(status.success(), "tests/java compiles");
        out
    })
}

/// A running publisher.
#[derive(Debug)]
pub struct Publisher {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

/// What one command published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Redis subscribers that received it (`None` for RabbitMQ).
    pub receivers: Option<u64>,
    /// The exact payload, as text.
    pub payload: String,
}

impl Publisher {
    /// Starts the JVM.
    pub fn start() -> Self {
        let mut child = tokio::process::Command::new("java")
            .args(["-cp", &classpath(classes()), "switchboard.IngestPublisher"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("java starts");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// Runs one command (see `IngestPublisher`'s doc); panics when it fails.
    pub async fn run(&mut self, fields: &[&str]) -> Published {
        let line = format!("{}\n", fields.join("\t"));
        self.stdin.write_all(line.as_bytes()).await.expect("write");
        self.stdin.flush().await.expect("flush");
        let answer = tokio::time::timeout(PATIENCE * 3, self.lines.next_line())
            .await
            .expect("the publisher answers")
            .expect("read")
            .expect("the publisher runs");
        let (receivers, payload) = answer.split_once('\t').expect("two fields");
        assert_ne!(receivers, "error", "{fields:?}: {payload}");
        Published {
            receivers: receivers.parse().ok(),
            payload: payload.to_owned(),
        }
    }

    /// Ends the JVM.
    pub async fn stop(mut self) {
        drop(self.stdin);
        let _ = tokio::time::timeout(PATIENCE, self.child.wait()).await;
    }
}
