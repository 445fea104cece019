//! `spate top` in a real terminal (a detached tmux session): it shows the
//! queues of a running spate, and its keys resume and suspend a destination
//! for real (the held mail reaches the sink once resumed).

mod common;
use common::*;

use std::process::Command;
use std::time::Duration;

/// A tmux server of its own (its socket in the test's directory), killed on
/// drop so a failed test leaves nothing behind.
struct Tmux {
    socket: std::path::PathBuf,
    session: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success(), "tmux send-keys {keys:?}");
    }

    /// The pane's text, or None once the session has ended.
    fn screen(&self) -> Option<String> {
        let out = self.cmd(&["capture-pane", "-p", "-t", &self.session]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn alive(&self) -> bool {
        self.cmd(&["has-session", "-t", &self.session])
            .status
            .success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn top_shows_queues_and_its_keys_resume_and_suspend_a_destination() {
    require("tmux");
    let sink = Sink::start(&free_addr(), &[]);
    let spate = Spate::start(&["--smarthost", &sink.addr, "--cores", "0-1"]);

    let (ok, out) = spate.ctl(&["suspend", "--domain", "held.test", "--for", "1h"]);
    assert!(ok, "ctl suspend: {out}");
    let mut c = spate.connect();
    for _ in 0..3 {
        c.transaction("s@x.test", &["r@slow.test"], b"Subject: x\r\n\r\nbody\r\n");
    }
    for _ in 0..2 {
        c.transaction(
            "s@x.test",
            &["x@held.test"],
            b"Subject: held\r\n\r\nbody\r\n",
        );
    }
    wait_until(Duration::from_secs(30), "3 messages at the sink", || {
        sink.count() >= 3
    });
    wait_until(Duration::from_secs(30), "held.test queued", || {
        spate.ctl(&["queues"]).1.contains("held.test")
    });
    assert_eq!(
        sink.count(),
        3,
        "held.test's mail was delivered while suspended"
    );

    let err = spate.dir.path().join("top.stderr");
    let command = format!(
        "{} top --admin {} --spool {} --interval-ms 300 2>{}",
        env!("CARGO_BIN_EXE_spate"),
        spate.admin_url(),
        spate.spool_dir().display(),
        err.display()
    );
    let tmux = Tmux {
        socket: spate.dir.path().join("tmux.sock"),
        session: "top".into(),
    };
    let started = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        &tmux.session,
        "-x",
        "200",
        "-y",
        "50",
        &command,
    ]);
    assert!(started.status.success(), "tmux new-session: {started:?}");
    let screen = || match tmux.screen() {
        Some(s) => s,
        None => panic!(
            "spate top ended; its stderr: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        ),
    };
    wait_until(Duration::from_secs(30), "top to show held.test", || {
        let s = screen();
        s.contains("held.test") && s.contains("slow.test")
    });

    // Filter to held.test (its row is then the selected one), resume it.
    tmux.keys(&["/"]);
    tmux.keys(&["-l", "held.test"]);
    tmux.keys(&["Enter"]);
    tmux.keys(&["r"]);
    wait_until(Duration::from_secs(30), "top to say it resumed", || {
        screen().contains("resumed held.test")
    });
    wait_until(Duration::from_secs(30), "the held mail at the sink", || {
        sink.count() >= 5
    });

    tmux.keys(&["p"]);
    wait_until(Duration::from_secs(30), "a suspension of held.test", || {
        let (ok, out) = spate.ctl(&["actions"]);
        ok && out
            .lines()
            .any(|l| l.contains("suspend") && l.contains("held.test"))
    });
    wait_until(Duration::from_secs(10), "top to say it suspended", || {
        screen().contains("suspended held.test for 1h")
    });

    tmux.keys(&["q"]);
    wait_until(Duration::from_secs(10), "top to exit on q", || {
        !tmux.alive()
    });
}
