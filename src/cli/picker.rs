//! `cmdop connect` with no machine: a full-screen picker (ratatui). Type to fuzzy-search
//! hostnames and display names; recently attached machines come first, then online ones;
//! each row shows the online flag and the heartbeat's age. Enter attaches, Esc or Ctrl-C
//! cancels. The model (`Picker`) and the scoring are pure; only `pick` touches the terminal.

use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem, ListState, Paragraph};
use ratatui::{DefaultTerminal, Frame};

use super::client::Client;
use super::error::CliError;
use super::{home, machines};
use crate::proto::MachineInfo;

/// Machines remembered as recently attached, most recent first: 20.
const RECENT_KEEP: usize = 20;
/// The file, in `CMDOP_HOME`.
const RECENT_FILE: &str = "recent.json";
/// How often the picker redraws while idle (heartbeat ages move): 1 s.
const TICK: Duration = Duration::from_secs(1);

/// Machine ids attached to recently, most recent first (empty when unknown).
pub(crate) fn recent() -> Vec<String> {
    std::fs::read(home::dir().join(RECENT_FILE)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// Puts `id` first in the recent list. Best effort: a read-only home only loses the ordering.
pub(crate) fn remember(id: &str) {
    let mut ids = recent();
    ids.retain(|r| r != id);
    ids.insert(0, id.to_string());
    ids.truncate(RECENT_KEEP);
    if let Ok(bytes) = serde_json::to_vec(&ids) {
        let _ = std::fs::create_dir_all(home::dir());
        let _ = std::fs::write(home::dir().join(RECENT_FILE), bytes);
    }
}

/// How well `query` matches `text` as a case-insensitive subsequence; `None` when it does not.
/// Consecutive matches and matches at word starts score higher, so `web1` ranks `web-1`
/// above `w-e-b-...-1`.
fn fuzzy_score(query: &str, text: &str) -> Option<i64> {
    let text: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    let (mut score, mut at, mut previous) = (0i64, 0usize, None::<usize>);
    for q in query.chars().flat_map(char::to_lowercase) {
        let found = (at..text.len()).find(|&i| text[i] == q)?;
        let word_start = found == 0 || matches!(text[found - 1], '-' | '_' | '.' | ' ' | '/');
        score += 1 + if previous == Some(found.wrapping_sub(1)) { 8 } else { 0 } + if word_start { 4 } else { 0 };
        score -= i64::try_from(found - at).unwrap_or(i64::MAX).min(10);
        previous = Some(found);
        at = found + 1;
    }
    Some(score)
}

/// The picker's state.
struct Picker {
    machines: Vec<MachineInfo>,
    recent: Vec<String>,
    query: String,
    /// Indexes into `machines`, best first.
    shown: Vec<usize>,
    selected: usize,
}

/// What a key did.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Keep going.
    More,
    /// Attach to this machine.
    Chosen(MachineInfo),
    /// The user gave up.
    Cancelled,
}

impl Picker {
    /// A picker over `machines`, with `recent` (ids, most recent first) ranked first.
    pub(crate) fn new(machines: Vec<MachineInfo>, recent: Vec<String>) -> Self {
        let mut picker = Self { machines, recent, query: String::new(), shown: Vec::new(), selected: 0 };
        picker.refilter();
        picker
    }

    fn score(&self, m: &MachineInfo) -> Option<i64> {
        if self.query.is_empty() {
            return Some(0);
        }
        let by_host = fuzzy_score(&self.query, &m.hostname);
        let by_name = fuzzy_score(&self.query, &m.display_name);
        by_host.max(by_name)
    }

    fn refilter(&mut self) {
        let rank = |m: &MachineInfo| self.recent.iter().position(|r| *r == m.id).unwrap_or(usize::MAX);
        let mut scored: Vec<(i64, usize, bool, &str, usize)> = self
            .machines
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some((self.score(m)?, rank(m), !m.online, m.hostname.as_str(), i)))
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(b.3)));
        self.shown = scored.into_iter().map(|s| s.4).collect();
        self.selected = self.selected.min(self.shown.len().saturating_sub(1));
    }

    /// The machines shown, best first.
    pub(crate) fn shown(&self) -> impl Iterator<Item = &MachineInfo> {
        self.shown.iter().filter_map(|&i| self.machines.get(i))
    }

    /// Handles one key.
    pub(crate) fn key(&mut self, key: KeyEvent) -> Step {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Esc => return Step::Cancelled,
            KeyCode::Char('c') | KeyCode::Char('d') if ctrl => return Step::Cancelled,
            KeyCode::Enter => {
                let chosen = self.shown.get(self.selected).and_then(|&i| self.machines.get(i));
                return chosen.cloned().map_or(Step::More, Step::Chosen);
            }
            KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Char('p') | KeyCode::Char('k') if ctrl => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down => self.selected = (self.selected + 1).min(self.shown.len().saturating_sub(1)),
            KeyCode::Char('n') | KeyCode::Char('j') if ctrl => {
                self.selected = (self.selected + 1).min(self.shown.len().saturating_sub(1));
            }
            KeyCode::Char('u') if ctrl => self.set_query(String::new()),
            KeyCode::Backspace => {
                let mut q = self.query.clone();
                q.pop();
                self.set_query(q);
            }
            KeyCode::Char(c) if !ctrl => self.set_query(format!("{}{c}", self.query)),
            _ => {}
        }
        Step::More
    }

    fn set_query(&mut self, query: String) {
        self.query = query;
        self.selected = 0;
        self.refilter();
    }

    fn draw(&self, frame: &mut Frame) {
        let [title, input, list] =
            Layout::vertical([Constraint::Length(1), Constraint::Length(1), Constraint::Min(1)]).areas(frame.area());
        let hint = "pick a machine: type to search, Up/Down to move, Enter to attach, Esc to cancel";
        frame.render_widget(Paragraph::new(hint).style(Style::new().add_modifier(Modifier::DIM)), title);
        frame.render_widget(Paragraph::new(format!("> {}", self.query)), input);
        let items: Vec<ListItem> = self.shown().map(row).collect();
        let mut state = ListState::default().with_selected((!self.shown.is_empty()).then_some(self.selected));
        let list_widget =
            List::new(items).highlight_style(Style::new().add_modifier(Modifier::REVERSED)).highlight_symbol("> ");
        frame.render_stateful_widget(list_widget, list, &mut state);
    }
}

fn row(m: &MachineInfo) -> ListItem<'static> {
    let (dot, color, status) = if m.online {
        ("●", Color::Green, format!("online, heartbeat {}", machines::ago(&m.last_seen)))
    } else {
        ("○", Color::DarkGray, format!("offline, last seen {}", machines::ago(&m.last_seen)))
    };
    ListItem::new(Line::from(vec![
        Span::styled(format!("{dot} "), Style::new().fg(color)),
        Span::raw(format!("{:<24} ", m.hostname)),
        Span::raw(format!("{:<20} ", m.display_name)),
        Span::styled(status, Style::new().add_modifier(Modifier::DIM)),
    ]))
}

/// Restores the terminal however the picker ends.
struct Screen(DefaultTerminal);

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

fn run(mut picker: Picker) -> std::io::Result<Option<MachineInfo>> {
    let mut screen = Screen(ratatui::try_init()?);
    loop {
        screen.0.draw(|f| picker.draw(f))?;
        if !event::poll(TICK)? {
            continue;
        }
        if let Event::Key(key) = event::read()? {
            if key.kind != KeyEventKind::Press {
                continue;
            }
            match picker.key(key) {
                Step::More => {}
                Step::Chosen(m) => return Ok(Some(m)),
                Step::Cancelled => return Ok(None),
            }
        }
    }
}

/// Lets the user pick a machine of the active fleet; `None` when they cancel.
pub(crate) async fn pick(client: &mut Client) -> Result<Option<MachineInfo>, CliError> {
    let machines = machines::fetch(client).await?;
    if machines.is_empty() {
        return Err(CliError::Failed(
            "no machines in this fleet yet; enroll one with `cmdop fleet token create`".into(),
        ));
    }
    let picker = Picker::new(machines, recent());
    tokio::task::spawn_blocking(move || run(picker))
        .await
        .map_err(|e| CliError::Failed(format!("the picker failed: {e}")))?
        .map_err(|e| CliError::Failed(format!("the picker failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(id: &str, hostname: &str, display: &str, online: bool) -> MachineInfo {
        MachineInfo {
            id: id.into(),
            hostname: hostname.into(),
            display_name: display.into(),
            online,
            ..Default::default()
        }
    }

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn fuzzy_prefers_word_starts_and_runs() {
        assert!(fuzzy_score("web1", "web-1").is_some());
        assert!(fuzzy_score("xyz", "web-1").is_none());
        assert!(fuzzy_score("web", "web-1") > fuzzy_score("web", "a-w-e-b"));
        assert!(fuzzy_score("WEB", "web").is_some(), "case-insensitive");
    }

    #[test]
    fn recent_then_online_machines_come_first() {
        let all =
            vec![machine("1", "alpha", "", false), machine("2", "beta", "", true), machine("3", "gamma", "", true)];
        let picker = Picker::new(all, vec!["3".into()]);
        let order: Vec<&str> = picker.shown().map(|m| m.hostname.as_str()).collect();
        assert_eq!(order, ["gamma", "beta", "alpha"]);
    }

    #[test]
    fn typing_filters_by_hostname_or_display_name_and_enter_picks() {
        let all = vec![machine("1", "db-1", "database", true), machine("2", "web-1", "frontend", true)];
        let mut picker = Picker::new(all, vec![]);
        for c in "front".chars() {
            assert_eq!(picker.key(press(KeyCode::Char(c))), Step::More);
        }
        let shown: Vec<&str> = picker.shown().map(|m| m.hostname.as_str()).collect();
        assert_eq!(shown, ["web-1"]);
        assert!(matches!(picker.key(press(KeyCode::Enter)), Step::Chosen(m) if m.id == "2"));
        assert_eq!(picker.key(press(KeyCode::Esc)), Step::Cancelled);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(picker.key(ctrl_c), Step::Cancelled);
    }
}
