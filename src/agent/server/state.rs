//! The agent's state: process slots and call records in memory, the state
//! file they are saved to (written atomically), and adoption of the
//! processes a state file names when an agent starts.

use super::fence::Fences;
use super::{Error, Result, MAX_RECORDS, STATE_VERSION};
use crate::agent::process::Proc;
use crate::agent::protocol::Fence;
use crate::agent::protocol::{CallRecord, Operation, ProcessState, ProcessStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use tokio_util::sync::CancellationToken;

/// One process slot: what runs there now, and how its last run ended.
#[derive(Debug, Clone, Default)]
pub(super) struct Slot {
    pub(super) proc: Option<Proc>,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) last_exit: Option<String>,
}

impl Slot {
    pub(super) fn running(&self) -> Option<&Proc> {
        self.proc.as_ref().filter(|p| p.is_running())
    }

    pub(super) fn status(&self, name: &str) -> ProcessStatus {
        match self.running() {
            Some(p) => ProcessStatus {
                name: name.to_string(),
                state: ProcessState::Running,
                pid: Some(p.pid),
                started_at: self.started_at,
                last_exit: self.last_exit.clone(),
            },
            None => ProcessStatus {
                name: name.to_string(),
                state: ProcessState::Stopped,
                pid: None,
                started_at: None,
                last_exit: self.ended_how(),
            },
        }
    }

    /// How the last run ended: the reaped status if this agent saw it.
    pub(super) fn ended_how(&self) -> Option<String> {
        match &self.proc {
            Some(p) if !p.is_running() => p
                .exit_reason()
                .or_else(|| Some(format!("pid {} is gone", p.pid))),
            _ => self.last_exit.clone(),
        }
    }

    /// Records that the process stopped.
    pub(super) fn stopped(&mut self, how: Option<String>) {
        self.last_exit = how.or_else(|| self.ended_how());
        self.proc = None;
        self.started_at = None;
    }
}

/// Everything the agent keeps, in memory.
pub(super) struct AgentState {
    pub(super) observer_port: u16,
    pub(super) observer_active: bool,
    pub(super) slots: BTreeMap<String, Slot>,
    pub(super) calls: VecDeque<CallRecord>,
    /// The newest attempt seen per subtask (saved).
    pub(super) fences: Fences,
    /// The attempt whose performance runs now, if its key names one (not
    /// saved: nothing runs across a restart).
    pub(super) current: Option<Current>,
}

/// The performance in progress of an attempt key, and how to stop it.
#[derive(Debug)]
pub(super) struct Current {
    pub(super) subtask: String,
    pub(super) run_time: u64,
    pub(super) stop: CancellationToken,
}

impl AgentState {
    pub(super) fn slot(&mut self, name: &str) -> &mut Slot {
        self.slots.entry(name.to_string()).or_default()
    }

    pub(super) fn status_of(&self, name: &str) -> ProcessStatus {
        match self.slots.get(name) {
            Some(s) => s.status(name),
            None => Slot::default().status(name),
        }
    }

    pub(super) fn find_call(&mut self, key: &str, op: Operation) -> Option<&mut CallRecord> {
        self.calls
            .iter_mut()
            .rev()
            .find(|c| c.key == key && c.operation == op)
    }

    pub(super) fn to_file(&self) -> StateFile {
        let processes = self
            .slots
            .iter()
            .map(|(name, slot)| {
                let rec = match slot.running() {
                    Some(p) => ProcRecord {
                        pid: Some(p.pid),
                        start_ticks: p.start_ticks,
                        started_at: slot.started_at,
                        last_exit: slot.last_exit.clone(),
                    },
                    None => ProcRecord {
                        pid: None,
                        start_ticks: None,
                        started_at: None,
                        last_exit: slot.ended_how(),
                    },
                };
                (name.clone(), rec)
            })
            .collect();
        StateFile {
            version: STATE_VERSION,
            observer_port: self.observer_port,
            observer_active: self.observer_active,
            processes,
            calls: self.calls.iter().cloned().collect(),
            fences: self.fences.records(),
        }
    }
}

/// The state file's layout.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StateFile {
    pub(super) version: u32,
    pub(super) observer_port: u16,
    pub(super) observer_active: bool,
    pub(super) processes: BTreeMap<String, ProcRecord>,
    pub(super) calls: Vec<CallRecord>,
    /// Absent in files written before fencing.
    #[serde(default)]
    pub(super) fences: Vec<Fence>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ProcRecord {
    pub(super) pid: Option<u32>,
    pub(super) start_ticks: Option<u64>,
    pub(super) started_at: Option<DateTime<Utc>>,
    pub(super) last_exit: Option<String>,
}

pub(super) fn read_state(path: &Path) -> Result<Option<StateFile>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::StateDir {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if file.version != STATE_VERSION {
        return Err(Error::CorruptState {
            path: path.to_path_buf(),
            message: format!("layout version {} is not {STATE_VERSION}", file.version),
        });
    }
    Ok(Some(file))
}

/// Writes `bytes` to `path` atomically: a temporary file of a name of its
/// own in the same directory (removed if anything fails), flushed, renamed
/// over `path`, then the directory flushed.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".state-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Rebuilds the in-memory state from the file, adopting the processes that
/// still run and marking the others stopped.
pub(super) fn adopt(file: StateFile) -> AgentState {
    let mut slots = BTreeMap::new();
    for (name, rec) in file.processes {
        let slot = match rec.pid {
            Some(pid) => match Proc::adopt(&name, pid, rec.start_ticks) {
                Some(p) => {
                    tracing::info!(name, pid, "adopted a running process");
                    Slot {
                        proc: Some(p),
                        started_at: rec.started_at,
                        last_exit: rec.last_exit,
                    }
                }
                None => {
                    tracing::info!(name, pid, "a recorded process is gone");
                    Slot {
                        proc: None,
                        started_at: None,
                        last_exit: Some(format!("pid {pid} was gone when the agent started")),
                    }
                }
            },
            None => Slot {
                proc: None,
                started_at: None,
                last_exit: rec.last_exit,
            },
        };
        slots.insert(name, slot);
    }
    let mut calls: VecDeque<CallRecord> = file.calls.into();
    while calls.len() > MAX_RECORDS {
        calls.pop_front();
    }
    AgentState {
        observer_port: file.observer_port,
        observer_active: file.observer_active,
        slots,
        calls,
        fences: Fences::from_records(file.fences),
        current: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::dirlock::DirLock;
    use super::super::STATE_FILE;
    use super::*;

    #[test]
    fn state_files_are_written_atomically_and_checked() {
        let dir = std::env::temp_dir().join(format!(
            "taskd-agent-unit-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(STATE_FILE);
        assert!(matches!(read_state(&path), Ok(None)));
        write_atomically(&path, b"{not json").expect("write");
        assert!(matches!(read_state(&path), Err(Error::CorruptState { .. })));
        let file = StateFile {
            version: STATE_VERSION,
            observer_port: 2881,
            observer_active: true,
            processes: BTreeMap::new(),
            calls: vec![],
            fences: vec![],
        };
        let bytes = serde_json::to_vec(&file).expect("encode");
        write_atomically(&path, &bytes).expect("write");
        let back = read_state(&path).expect("read").expect("present");
        assert!(back.observer_active);
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("list the state directory")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
        let held = DirLock::take(&dir).expect("first lock");
        assert!(matches!(DirLock::take(&dir), Err(Error::Locked { .. })));
        drop(held);
        assert!(DirLock::take(&dir).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
