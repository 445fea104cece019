//! `spate top`: a live terminal view of a running spate (throughput, queues
//! by destination, the operator's actions in force) with keys to sort,
//! filter, suspend and resume. It owns only the view and its keys: it reads
//! the admin API and sends suspend and resume, nothing else.

use crate::ctl::client::{Client, Target};
use crate::ctl::print::{age, s as cell};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use ratatui::{DefaultTerminal, Frame};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    target: Target,
    /// Time between refreshes, in milliseconds.
    #[arg(long = "interval-ms", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(50..))]
    interval_ms: u64,
}

const SORTS: [&str; 3] = ["ready", "deferred", "age"];
/// Rows asked for: the filter works on these, so as many as the API gives.
const LIMIT: usize = 1000;
/// How long `p` suspends a destination.
const SUSPEND_S: u64 = 3600;
const REASON: &str = "spate top";

/// The counters whose rates the header shows, and their labels there.
const COUNTERS: [&str; 4] = ["received", "delivered", "deferred", "bounced"];
const LABELS: [&str; 4] = ["in", "out", "deferred", "bounced"];
/// The queue row's fields shown as they are, the table's first columns.
const FIELDS: [&str; 6] = [
    "domain",
    "core",
    "ready",
    "waiting",
    "suspended",
    "connections",
];
/// Messages per second between the last two polls, in `COUNTERS`' order.
type Rates = [f64; 4];
/// The table's columns and their widths (0: what is left).
const COLUMNS: [(&str, u16); 9] = [
    ("DESTINATION", 32),
    ("CORE", 4),
    ("READY", 7),
    ("WAITING", 7),
    ("SUSPENDED", 9),
    ("CONNS", 5),
    ("OLDEST", 6),
    ("DEFERRED", 8),
    ("LAST REPLY", 0),
];

struct App {
    client: Client,
    sort: usize,
    filter: String,
    editing: bool,
    summary: Value,
    queues: Vec<Value>,
    actions: Vec<Value>,
    rates: Option<Rates>,
    latency: Option<Duration>,
    /// The destination under the cursor, kept across refreshes by name.
    selected: Option<String>,
    table: TableState,
    status: String,
    error: Option<String>,
}

enum Next {
    Stay,
    Refresh,
    Quit,
}

pub fn run(args: TopArgs) -> Result<(), String> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return Err("spate top draws on a terminal, and stdout is not one".into());
    }
    let client = args.target.connect()?;
    let mut app = App {
        client,
        sort: 0,
        filter: String::new(),
        editing: false,
        summary: Value::Null,
        queues: Vec::new(),
        actions: Vec::new(),
        rates: None,
        latency: None,
        selected: None,
        table: TableState::default(),
        status: String::new(),
        error: None,
    };
    let interval = Duration::from_millis(args.interval_ms);
    // Restored whatever happens: init's panic hook covers panics, this the
    // rest (an error half way through init included).
    let result = ratatui::try_init()
        .map_err(|e| format!("terminal: {e}"))
        .and_then(|mut terminal| app.run(&mut terminal, interval));
    ratatui::restore();
    result
}

fn io(e: std::io::Error) -> String {
    format!("terminal: {e}")
}

impl App {
    fn run(&mut self, terminal: &mut DefaultTerminal, interval: Duration) -> Result<(), String> {
        let mut next_poll = Instant::now();
        loop {
            if Instant::now() >= next_poll {
                self.poll();
                next_poll = Instant::now() + interval;
            }
            terminal.draw(|f| self.draw(f)).map_err(io)?;
            // Keys are handled as they come; the wait ends at the next refresh.
            let wait = next_poll.saturating_duration_since(Instant::now());
            if !event::poll(wait).map_err(io)? {
                continue;
            }
            match event::read().map_err(io)? {
                Event::Key(k) if k.kind == KeyEventKind::Press => match self.key(k) {
                    Next::Stay => {}
                    Next::Refresh => next_poll = Instant::now(),
                    Next::Quit => return Ok(()),
                },
                _ => {}
            }
        }
    }

    /// Reads the summary, the queues and the actions; an error is shown and
    /// the last good view stays.
    fn poll(&mut self) {
        let started = Instant::now();
        let summary = match self.client.get("/api/v1/summary") {
            Ok(v) => v,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        self.latency = Some(started.elapsed());
        let path = format!("/api/v1/queues?sort={}&limit={LIMIT}", SORTS[self.sort]);
        let (queues, actions) = match (self.client.get(&path), self.client.get("/api/v1/actions")) {
            (Ok(q), Ok(a)) => (q, a),
            (Err(e), _) | (_, Err(e)) => {
                self.error = Some(e);
                return;
            }
        };
        self.error = None;
        self.rates = rates(&self.summary, &summary);
        self.summary = summary;
        self.queues = queues["queues"].as_array().cloned().unwrap_or_default();
        self.actions = actions["actions"].as_array().cloned().unwrap_or_default();
        self.reselect();
    }

    /// The queues the filter lets through, in the server's order.
    fn visible(&self) -> Vec<&Value> {
        self.queues
            .iter()
            .filter(|q| {
                q["domain"]
                    .as_str()
                    .is_some_and(|d| d.contains(self.filter.as_str()))
            })
            .collect()
    }

    /// Puts the cursor back on the selected destination, or on the row
    /// where it was if that one has gone.
    fn reselect(&mut self) {
        let names: Vec<String> = self.visible().iter().map(|q| cell(&q["domain"])).collect();
        let at = self
            .selected
            .as_ref()
            .and_then(|s| names.iter().position(|n| n == s));
        let i = match at {
            Some(i) => Some(i),
            None if names.is_empty() => None,
            None => Some(self.table.selected().unwrap_or(0).min(names.len() - 1)),
        };
        self.table.select(i);
        self.selected = i.map(|i| names[i].clone());
    }

    fn step(&mut self, by: isize) {
        let n = self.visible().len();
        if n == 0 {
            return;
        }
        let i = self.table.selected().unwrap_or(0) as isize + by;
        let i = i.clamp(0, n as isize - 1) as usize;
        self.table.select(Some(i));
        self.selected = Some(cell(&self.visible()[i]["domain"]));
    }

    fn key(&mut self, k: KeyEvent) -> Next {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return Next::Quit;
        }
        if self.editing {
            match k.code {
                KeyCode::Enter => {
                    self.editing = false;
                    return Next::Stay;
                }
                KeyCode::Esc => {
                    self.editing = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => return Next::Stay,
            }
            self.table.select(Some(0));
            self.selected = None;
            self.reselect();
            return Next::Stay;
        }
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return Next::Quit,
            KeyCode::Char('s') => {
                self.sort = (self.sort + 1) % SORTS.len();
                return Next::Refresh;
            }
            KeyCode::Char('/') => {
                self.editing = true;
                self.filter.clear();
                self.reselect();
            }
            KeyCode::Up | KeyCode::Char('k') => self.step(-1),
            KeyCode::Down | KeyCode::Char('j') => self.step(1),
            KeyCode::Char('p') => {
                self.status = self.with_selected(Self::suspend);
                return Next::Refresh;
            }
            KeyCode::Char('r') => {
                self.status = self.with_selected(Self::resume);
                return Next::Refresh;
            }
            _ => {}
        }
        Next::Stay
    }

    fn with_selected(&self, act: fn(&Self, &str) -> Result<String, String>) -> String {
        match &self.selected {
            None => "no destination selected".into(),
            Some(d) => act(self, d).unwrap_or_else(|e| format!("{d}: {e}")),
        }
    }

    fn suspend(&self, domain: &str) -> Result<String, String> {
        let body = json!({ "domain": domain, "duration_s": SUSPEND_S, "reason": REASON });
        let v = self.client.send("POST", "/api/v1/suspend", &body)?;
        Ok(format!("suspended {domain} for 1h ({})", cell(&v["id"])))
    }

    /// Ends every suspension of exactly this destination.
    fn resume(&self, domain: &str) -> Result<String, String> {
        let all = self.client.get("/api/v1/actions")?;
        let mut ended = Vec::new();
        for a in all["actions"].as_array().into_iter().flatten() {
            if a["kind"] != "suspend" || a["selector"]["domain"] != domain {
                continue;
            }
            let id = cell(&a["id"]);
            let path = format!(
                "/api/v1/suspend/{}",
                form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
            );
            self.client
                .send("DELETE", &path, &json!({ "reason": REASON }))?;
            ended.push(id);
        }
        Ok(match ended.is_empty() {
            true => format!("{domain} has no suspension to end"),
            false => format!("resumed {domain} (ended {})", ended.join(", ")),
        })
    }

    fn draw(&mut self, f: &mut Frame) {
        let actions_h = (self.actions.len().min(6) as u16).max(1) + 2;
        let [head, table, actions, status] = Layout::vertical([
            Constraint::Length(4),
            Constraint::Fill(1),
            Constraint::Length(actions_h),
            Constraint::Length(1),
        ])
        .areas(f.area());
        f.render_widget(self.header(), head);
        self.draw_table(f, table);
        f.render_widget(self.action_list(), actions);
        f.render_widget(self.status_line(), status);
    }

    fn header(&self) -> Paragraph<'static> {
        let s = &self.summary;
        let rates: Vec<String> = LABELS
            .iter()
            .enumerate()
            .map(|(i, label)| {
                let r = self.rates.map_or("-".into(), |r| format!("{:.1}/s", r[i]));
                format!("{label} {r}")
            })
            .collect();
        let latency = self
            .latency
            .map_or("-".into(), |l| format!("{} ms", l.as_millis()));
        let line1 = format!(
            "{}   up {}  cores {}  latency {latency}",
            rates.join("  "),
            s["uptime_s"].as_f64().map_or("-".into(), age),
            cell(&s["cores"]),
        );
        let line2 = format!(
            "queue ready {}  waiting {}{}   connections in {}  out {}   actions {}",
            cell(&s["ready"]),
            cell(&s["waiting"]),
            match &s["suspended"] {
                Value::Null => String::new(),
                n => format!("  suspended {n}"),
            },
            cell(&s["connections_in"]),
            cell(&s["connections_out"]),
            cell(&s["actions"]),
        );
        let title = format!(" spate top  sort: {} ", SORTS[self.sort]);
        Paragraph::new(vec![Line::from(line1), Line::from(line2)])
            .block(Block::bordered().title(title))
    }

    fn draw_table(&mut self, f: &mut Frame, area: ratatui::layout::Rect) {
        let rows: Vec<Row> = self
            .visible()
            .iter()
            .map(|q| {
                let mut cells: Vec<String> = FIELDS.iter().map(|k| cell(&q[k])).collect();
                cells.push(age(q["oldest_age_s"].as_f64().unwrap_or(0.0)));
                cells.push(cell(&q["deferred"]));
                cells.push(cell(&q["last_reply"]["text"]));
                Row::new(cells)
            })
            .collect();
        let n = rows.len();
        let widths = COLUMNS.map(|(_, w)| match w {
            0 => Constraint::Fill(1),
            w => Constraint::Length(w),
        });
        let head = Row::new(COLUMNS.map(|(h, _)| h));
        let filter = match (self.editing, self.filter.is_empty()) {
            (false, true) => String::new(),
            _ => format!("  filter: {}", self.filter),
        };
        let table = Table::new(rows, widths)
            .header(head.style(Style::new().add_modifier(Modifier::BOLD)))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .block(Block::bordered().title(format!(" destinations ({n}){filter} ")));
        f.render_stateful_widget(table, area, &mut self.table);
    }

    fn action_list(&self) -> Paragraph<'static> {
        let now = self.summary["time_ms"].as_u64().unwrap_or(0);
        let mut lines: Vec<Line> = self
            .actions
            .iter()
            .map(|a| {
                let selector = a["selector"].as_object().and_then(|m| m.iter().next());
                let on = selector.map_or("-".into(), |(k, v)| format!("{k} {}", cell(v)));
                let left =
                    a["until_ms"].as_u64().map_or(0, |u| u.saturating_sub(now)) as f64 / 1000.0;
                Line::from(format!(
                    "{:<5} {:<8} {on:<40} {:>6} left  by {}: {}",
                    cell(&a["id"]),
                    cell(&a["kind"]),
                    age(left),
                    cell(&a["by"]),
                    cell(&a["reason"])
                ))
            })
            .collect();
        if lines.is_empty() {
            lines.push(Line::from("none"));
        }
        Paragraph::new(lines)
            .block(Block::bordered().title(format!(" actions in force ({}) ", self.actions.len())))
    }

    fn status_line(&self) -> Paragraph<'static> {
        if self.editing {
            return Paragraph::new(format!(
                "/{}_   (Enter ends the filter, Esc clears it)",
                self.filter
            ));
        }
        if let Some(e) = &self.error {
            return Paragraph::new(format!("admin API: {e}")).style(Style::new().fg(Color::Red));
        }
        let help = "q quit  s sort  / filter  j/k select  p suspend 1h  r resume";
        match self.status.is_empty() {
            true => Paragraph::new(help),
            false => Paragraph::new(format!("{}   |   {help}", self.status)),
        }
    }
}

/// Rates from two summaries, over the server's clock; none for the first
/// poll or when a counter went back (the server restarted).
fn rates(old: &Value, new: &Value) -> Option<Rates> {
    let secs = new["time_ms"]
        .as_u64()?
        .checked_sub(old["time_ms"].as_u64()?)? as f64
        / 1000.0;
    if secs <= 0.0 {
        return None;
    }
    let mut r = [0.0; 4];
    for (i, k) in COUNTERS.iter().enumerate() {
        r[i] = new[k].as_u64()?.checked_sub(old[k].as_u64()?)? as f64 / secs;
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_counter_differences_over_the_server_clock() {
        let a =
            json!({"time_ms": 1000, "received": 10, "delivered": 5, "deferred": 0, "bounced": 0});
        let b =
            json!({"time_ms": 3000, "received": 30, "delivered": 9, "deferred": 2, "bounced": 1});
        assert_eq!(rates(&a, &b), Some([10.0, 2.0, 1.0, 0.5]));
        assert!(rates(&Value::Null, &b).is_none());
        assert!(rates(&b, &a).is_none());
    }
}
