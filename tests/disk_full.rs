//! A full spool disk: clients get 452 4.3.1, nothing half-written counts as
//! accepted, the engine keeps running, and accepts again once there is room.
//! The test makes its own small tmpfs (it runs as root, as CI does).

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root (CI runs as root)");
        Mount(dir.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_gets_452_and_recovers_when_space_returns() {
    let base = tempfile::tempdir().unwrap();
    let mount = Mount::tmpfs(&base.path().join("disk"), "1200k");
    let spool = mount.0.join("spool");
    let config = base.path().join("spate.toml");
    std::fs::write(&config, "[spool]\nsegment_bytes = 524288\n").unwrap();
    let mut spate = Spate::start_with_spool(
        &[
            "--cores",
            "1",
            "--config",
            config.to_str().unwrap(),
            "--max-message-size",
            "100000",
        ],
        &spool,
    );
    let body = format!(
        "Subject: big\r\n\r\n{}",
        format!("{}\r\n", "b".repeat(98)).repeat(900)
    );
    let mut smtp = spate.connect();
    smtp.send("EHLO c.test").expect(250);
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..40 {
        smtp.send("MAIL FROM:<s@a.test>").expect(250);
        smtp.send("RCPT TO:<r@b.test>").expect(250);
        smtp.send("DATA").expect(354);
        smtp.raw(body.as_bytes()).raw(b".\r\n");
        let (code, lines) = smtp.reply();
        match code {
            250 => accepted += 1,
            452 => {
                refused = Some(lines[0].clone());
                break;
            }
            _ => panic!("unexpected reply {lines:?}"),
        }
    }
    let refused = refused.expect("the disk filled up within 40 messages");
    assert!(refused.contains("4.3.1"), "{refused}");
    assert!(accepted >= 2, "{accepted} accepted before the disk filled");
    smtp.send("NOOP").expect(250);

    mount.resize("4m");
    smtp.send("MAIL FROM:<s@a.test>").expect(250);
    smtp.send("RCPT TO:<r@b.test>").expect(250);
    smtp.send("DATA").expect(354);
    smtp.raw(body.as_bytes()).raw(b".\r\n").expect(250);
    accepted += 1;
    smtp.send("QUIT").expect(221);
    assert_eq!(spate.stop(), 0);
    assert_eq!(
        read_spool(&spool).len(),
        accepted,
        "exactly the acknowledged messages are in the spool"
    );
    let (clean, report) = spate_cmd(&["spool", "verify", spool.to_str().unwrap()]);
    assert!(clean, "{report}");
}
