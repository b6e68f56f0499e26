//! `query` and `users` read passwords from a terminal without echo, and give the terminal
//! its echo back afterwards, even when interrupted by Ctrl-C at the prompt. Run on a real
//! pseudo-terminal that is the child's controlling terminal, as in an admin's shell.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Spawns the bridge with the pty slave as its controlling terminal and stdin; stdout and
/// stderr go to the pty too, as in a shell.
fn spawn_on_pty(args: &[&str]) -> (Child, File, OwnedFd) {
    let (master, slave) = common::pty::openpty();
    let master = File::from(master);
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("EXTAUTH_BRIDGE_CONFIG")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    (child, master, slave)
}

fn echo_on(slave: &OwnedFd) -> bool {
    // SAFETY: a zeroed termios is a valid out-parameter.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and pointer.
    assert_eq!(unsafe { libc::tcgetattr(slave.as_raw_fd(), &mut t) }, 0);
    t.c_lflag & libc::ECHO != 0
}

/// The prompt is written before echo goes off: wait for it to go off.
fn wait_echo_off(slave: &OwnedFd) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while echo_on(slave) {
        assert!(Instant::now() < deadline, "echo never switched off");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads from the master until `want` shows up (or fails after 10 s).
fn read_until(master: &mut File, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&seen).contains(want) {
        assert!(
            Instant::now() < deadline,
            "no {want:?} in {:?}",
            String::from_utf8_lossy(&seen)
        );
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn password_is_not_echoed_and_echo_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path(), &[("romeo@example.net", "iheartjuliet")]);
    let (mut child, mut master, slave) = spawn_on_pty(&[
        "--users",
        users.to_str().unwrap(),
        "query",
        "auth",
        "romeo",
        "example.net",
    ]);
    read_until(&mut master, "Password for romeo@example.net: ");
    wait_echo_off(&slave);
    master.write_all(b"iheartjuliet\n").unwrap();
    let shown = read_until(&mut master, "took");
    assert!(shown.contains("-> 1 (yes)"), "{shown}");
    assert!(!shown.contains("iheartjuliet"), "password echoed: {shown}");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(echo_on(&slave), "echo not restored");
}

#[test]
fn ctrl_c_at_the_prompt_restores_echo() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accounts");
    let (mut child, mut master, slave) =
        spawn_on_pty(&["users", "add", file.to_str().unwrap(), "romeo@example.net"]);
    read_until(&mut master, "New password for romeo@example.net: ");
    wait_echo_off(&slave);
    master.write_all(b"half a pass").unwrap();
    master.write_all(&[3]).unwrap(); // ^C: SIGINT from the terminal driver
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    assert!(echo_on(&slave), "echo not restored after ^C");
    assert!(!file.exists());
}

/// A job-control parent, as a shell is: a session leader with the pty as its controlling
/// terminal, which runs the bridge in its own foreground process group (so that ^Z from the
/// terminal driver really stops it: the kernel ignores SIGTSTP in an orphaned group), says on
/// fd 3 when the bridge stopped, continues it when told on fd 4, and reports its exit code.
const JOB_SHELL: &str = r#"
import os, sys, signal, termios, fcntl
report = os.fdopen(3, "w", buffering=1)
os.setsid()
fcntl.ioctl(0, termios.TIOCSCTTY, 0)
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
go_r, go_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.read(go_r, 1)
    signal.signal(signal.SIGTTOU, signal.SIG_DFL)
    os.execv(sys.argv[1], sys.argv[1:])
os.setpgid(pid, pid)
os.tcsetpgrp(0, pid)
os.write(go_w, b"x")
_, status = os.waitpid(pid, os.WUNTRACED)
report.write("stopped\n" if os.WIFSTOPPED(status) else "exited\n")
os.read(4, 1)
os.kill(pid, signal.SIGCONT)
_, status = os.waitpid(pid, 0)
report.write("exit %d\n" % os.waitstatus_to_exitcode(status))
"#;

#[test]
fn ctrl_z_at_the_prompt_restores_echo_and_fg_takes_it_away_again() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("accounts");
    let (master, slave) = common::pty::openpty();
    let mut master = File::from(master);
    let (report_r, report_w) = rustix::pipe::pipe().unwrap();
    let (go_r, go_w) = rustix::pipe::pipe().unwrap();
    let (report_w_fd, go_r_fd) = (report_w.as_raw_fd(), go_r.as_raw_fd());
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        JOB_SHELL,
        BIN,
        "users",
        "add",
        file.to_str().unwrap(),
        "romeo@example.net",
    ])
    .env_remove("EXTAUTH_BRIDGE_CONFIG")
    .stdin(Stdio::from(slave.try_clone().unwrap()))
    .stdout(Stdio::from(slave.try_clone().unwrap()))
    .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(report_w_fd, 3) < 0 || libc::dup2(go_r_fd, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop((report_w, go_r));
    let mut report = std::io::BufReader::new(File::from(report_r));
    let mut go = File::from(go_w);

    read_until(&mut master, "New password for romeo@example.net: ");
    wait_echo_off(&slave);
    master.write_all(&[0x1a]).unwrap(); // ^Z: SIGTSTP from the terminal driver
    let mut line = String::new();
    report.read_line(&mut line).unwrap();
    assert_eq!(line, "stopped\n");
    assert!(echo_on(&slave), "echo left off while the job is stopped");

    go.write_all(b"c").unwrap(); // fg
    wait_echo_off(&slave);
    master.write_all(b"n3w-pass\n").unwrap();
    read_until(&mut master, "Retype it: ");
    master.write_all(b"n3w-pass\n").unwrap();
    line.clear();
    report.read_line(&mut line).unwrap();
    assert_eq!(line, "exit 0\n");
    assert!(child.wait().unwrap().success());
    assert!(echo_on(&slave), "echo not restored at the end");
    assert!(std::fs::read_to_string(&file)
        .unwrap()
        .starts_with("romeo@example.net:$argon2id$"));
}
