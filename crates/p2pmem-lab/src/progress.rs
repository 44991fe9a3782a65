//! Phase lines for long lab steps (kernel build, boot), always on stderr so that stdout
//! stays the guest's output. One line per phase plus a heartbeat every few seconds.

use std::time::{Duration, Instant};

/// Where progress goes: stderr, or nowhere.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
    /// Which guest the lines are about, when two run together.
    label: Option<&'static str>,
}

impl Progress {
    /// Progress lines on stderr.
    pub fn stderr() -> Self {
        Self {
            enabled: true,
            label: None,
        }
    }

    /// No progress output.
    pub fn quiet() -> Self {
        Self {
            enabled: false,
            label: None,
        }
    }

    /// The same, every line saying which guest it is about (`lab: [target] ...`).
    pub fn labelled(self, label: &'static str) -> Self {
        Self {
            label: Some(label),
            ..self
        }
    }

    /// Prints one phase line: `lab: <msg>`.
    pub fn phase(&self, msg: &str) {
        match (self.enabled, self.label) {
            (false, _) => {}
            (true, None) => eprintln!("lab: {msg}"),
            (true, Some(label)) => eprintln!("lab: [{label}] {msg}"),
        }
    }
}

/// Rate-limits heartbeat lines.
#[derive(Debug)]
pub struct Heartbeat {
    start: Instant,
    last: Instant,
    every: Duration,
}

impl Heartbeat {
    /// A heartbeat that fires at most once per `every`.
    pub fn new(every: Duration) -> Self {
        let now = Instant::now();
        Self {
            start: now,
            last: now,
            every,
        }
    }

    /// Seconds since the heartbeat was made.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// True (and re-armed) when `every` has passed since the last time it fired.
    pub fn due(&mut self) -> bool {
        if self.last.elapsed() >= self.every {
            self.last = Instant::now();
            true
        } else {
            false
        }
    }
}
