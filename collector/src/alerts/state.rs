//! The life of an alert instance: inactive → pending → firing → resolved, one evaluation at a time.
//!
//! An instance is one row of a rule's query (identified by its labels). While the condition holds it is
//! pending, and firing once it has held for the rule's `for`. When it stops holding, a pending instance
//! goes back to inactive at once, while a firing one keeps firing for `keep_firing_for` (the resolve
//! delay) and only then resolves, so a figure that dips under the threshold for one evaluation neither
//! resolves nor re-fires. Resolved and inactive instances are kept for [`RETENTION`], so the UI still
//! shows what happened and receivers learn about the resolution.
//!
//! Everything here is pure: time comes in as Unix milliseconds, so the tests drive it without clocks.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long a resolved or inactive instance stays listed (Prometheus keeps resolved alerts 15 minutes).
pub const RETENTION: Duration = Duration::from_secs(15 * 60);
/// Transitions kept per instance for the UI.
pub const HISTORY: usize = 20;

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// The condition does not hold (or no longer held before `for` passed).
    Inactive,
    /// The condition holds, for less than the rule's `for` so far.
    Pending,
    /// The condition has held for `for`; receivers are told.
    Firing,
    /// Was firing; the condition stopped holding for longer than `keep_firing_for`.
    Resolved,
}

impl State {
    /// The lower-case name used in the API and UI.
    pub fn name(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }
}

/// One state change, for the history shown in the UI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// When it happened (Unix ms).
    pub at_ms: i64,
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// The value at that evaluation (NaN-free: absent rows keep the last value).
    pub value: f64,
}

/// One alert instance of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Every label: `alertname`, the query's label columns, the rule's labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations rendered at the last evaluation that saw the instance.
    pub annotations: BTreeMap<String, String>,
    /// Where the instance is.
    pub state: State,
    /// The last value the query returned for it.
    pub value: f64,
    /// When the condition started to hold, in the current activation.
    pub active_at_ms: Option<i64>,
    /// When the instance last started firing.
    pub fired_at_ms: Option<i64>,
    /// When it resolved (set while resolved).
    pub resolved_at_ms: Option<i64>,
    /// The last evaluation at which the condition held.
    pub last_active_ms: Option<i64>,
    /// The last state change.
    pub changed_ms: i64,
    /// Recent transitions, oldest first, at most [`HISTORY`].
    pub history: VecDeque<Transition>,
}

/// One row of a rule's result as the state machine sees it.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Identity of the instance (sorted labels, so the same row maps to the same instance).
    pub key: String,
    /// The instance's labels.
    pub labels: BTreeMap<String, String>,
    /// Rendered annotations.
    pub annotations: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
    /// Whether the rule's condition holds for the value.
    pub holds: bool,
}

/// The timing of a rule that the state machine needs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long the condition must hold before firing.
    pub for_: Duration,
    /// How long a firing instance outlives its condition.
    pub keep_firing_for: Duration,
}

impl Instance {
    fn new(observation: &Observation, now_ms: i64) -> Instance {
        Instance {
            labels: observation.labels.clone(),
            annotations: observation.annotations.clone(),
            state: State::Inactive,
            value: observation.value,
            active_at_ms: None,
            fired_at_ms: None,
            resolved_at_ms: None,
            last_active_ms: None,
            changed_ms: now_ms,
            history: VecDeque::new(),
        }
    }

    fn move_to(&mut self, to: State, now_ms: i64) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Transition {
            at_ms: now_ms,
            from: self.state,
            to,
            value: self.value,
        });
        self.state = to;
        self.changed_ms = now_ms;
        match to {
            State::Firing => {
                self.fired_at_ms = Some(now_ms);
                self.resolved_at_ms = None;
            }
            State::Resolved => self.resolved_at_ms = Some(now_ms),
            State::Inactive => self.active_at_ms = None,
            State::Pending => {}
        }
    }

    /// One evaluation in which the condition held.
    fn holds(&mut self, now_ms: i64, timing: Timing) {
        self.last_active_ms = Some(now_ms);
        match self.state {
            State::Inactive | State::Resolved => {
                self.active_at_ms = Some(now_ms);
                self.move_to(State::Pending, now_ms);
                if timing.for_.is_zero() {
                    self.move_to(State::Firing, now_ms);
                }
            }
            State::Pending => {
                let since = self.active_at_ms.unwrap_or(now_ms);
                if now_ms - since >= millis(timing.for_) {
                    self.move_to(State::Firing, now_ms);
                }
            }
            State::Firing => {}
        }
    }

    /// One evaluation in which the condition did not hold (or the row was absent).
    fn does_not_hold(&mut self, now_ms: i64, timing: Timing) {
        match self.state {
            State::Pending => self.move_to(State::Inactive, now_ms),
            State::Firing => {
                let last = self.last_active_ms.unwrap_or(now_ms);
                if now_ms - last >= millis(timing.keep_firing_for) {
                    self.move_to(State::Resolved, now_ms);
                }
            }
            State::Inactive | State::Resolved => {}
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Advances every instance of one rule by one evaluation at `now_ms`; returns the keys of instances that
/// started firing or resolved (what receivers must hear about at once). Instances long inactive or
/// resolved are forgotten.
pub fn step(
    instances: &mut BTreeMap<String, Instance>,
    observations: Vec<Observation>,
    now_ms: i64,
    timing: Timing,
) -> Vec<String> {
    let before: BTreeMap<String, State> = instances
        .iter()
        .map(|(key, instance)| (key.clone(), instance.state))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for observation in observations {
        if !seen.insert(observation.key.clone()) {
            continue;
        }
        let instance = instances
            .entry(observation.key.clone())
            .or_insert_with(|| Instance::new(&observation, now_ms));
        instance.value = observation.value;
        instance.labels = observation.labels;
        instance.annotations = observation.annotations;
        if observation.holds {
            instance.holds(now_ms, timing);
        } else {
            instance.does_not_hold(now_ms, timing);
        }
    }
    for (key, instance) in instances.iter_mut() {
        if !seen.contains(key) {
            instance.does_not_hold(now_ms, timing);
        }
    }
    instances.retain(|_, instance| {
        matches!(instance.state, State::Pending | State::Firing)
            || now_ms - instance.changed_ms < millis(RETENTION)
    });
    instances
        .iter()
        .filter(|(key, instance)| {
            matches!(instance.state, State::Firing | State::Resolved)
                && before.get(*key) != Some(&instance.state)
        })
        .map(|(key, _)| key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1000;

    fn observe(value: f64) -> Vec<Observation> {
        vec![Observation {
            key: "a".into(),
            labels: BTreeMap::from([("service".into(), "a".into())]),
            annotations: BTreeMap::new(),
            value,
            holds: value > 5.0,
        }]
    }

    fn timing(for_secs: u64, keep_secs: u64) -> Timing {
        Timing {
            for_: Duration::from_secs(for_secs),
            keep_firing_for: Duration::from_secs(keep_secs),
        }
    }

    /// Runs one observation per second (`None` = the row is absent) and returns the state after each.
    fn run(values: &[Option<f64>], timing: Timing) -> (Vec<State>, Vec<Vec<String>>) {
        let mut instances = BTreeMap::new();
        let mut states = Vec::new();
        let mut changes = Vec::new();
        for (second, value) in values.iter().enumerate() {
            let observations = value.map(observe).unwrap_or_default();
            changes.push(step(
                &mut instances,
                observations,
                second as i64 * SEC,
                timing,
            ));
            states.push(instances.get("a").map_or(State::Inactive, |i| i.state));
        }
        (states, changes)
    }

    #[test]
    fn fires_only_after_the_condition_held_for_its_duration() {
        use State::*;
        let (states, changes) = run(&[Some(9.0), Some(9.0), Some(9.0), Some(1.0)], timing(2, 0));
        assert_eq!(states, [Pending, Pending, Firing, Resolved]);
        assert!(changes[1].is_empty());
        assert_eq!(changes[2], ["a"]);
        assert_eq!(changes[3], ["a"]);
    }

    #[test]
    fn a_short_spike_never_fires() {
        use State::*;
        let (states, changes) = run(&[Some(9.0), Some(1.0), Some(9.0), None], timing(2, 0));
        assert_eq!(states, [Pending, Inactive, Pending, Inactive]);
        assert!(changes.iter().all(Vec::is_empty));
    }

    #[test]
    fn a_flapping_figure_keeps_firing_within_the_resolve_delay() {
        use State::*;
        let values = [
            Some(9.0), // fires at once: for = 0
            Some(1.0),
            Some(9.0),
            None,
            Some(9.0),
            Some(1.0),
            Some(1.0),
            Some(1.0),
        ];
        let (states, changes) = run(&values, timing(0, 3));
        assert_eq!(
            states,
            [
                Firing, Firing, Firing, Firing, Firing, Firing, Firing, Resolved
            ]
        );
        let notified: Vec<usize> = (0..changes.len())
            .filter(|i| !changes[*i].is_empty())
            .collect();
        assert_eq!(notified, [0, 7], "one firing and one resolved notice");
    }

    #[test]
    fn without_a_resolve_delay_flapping_resolves_and_refires() {
        use State::*;
        let (states, _) = run(&[Some(9.0), Some(1.0), Some(9.0)], timing(0, 0));
        assert_eq!(states, [Firing, Resolved, Firing]);
    }

    #[test]
    fn history_records_transitions_and_old_instances_are_forgotten() {
        let mut instances = BTreeMap::new();
        let t = timing(1, 0);
        step(&mut instances, observe(9.0), 0, t);
        step(&mut instances, observe(9.0), SEC, t);
        step(&mut instances, vec![], 2 * SEC, t);
        let history: Vec<(State, State)> = instances["a"]
            .history
            .iter()
            .map(|h| (h.from, h.to))
            .collect();
        assert_eq!(
            history,
            [
                (State::Inactive, State::Pending),
                (State::Pending, State::Firing),
                (State::Firing, State::Resolved)
            ]
        );
        assert_eq!(instances["a"].resolved_at_ms, Some(2 * SEC));
        step(&mut instances, vec![], 2 * SEC + millis(RETENTION), t);
        assert!(instances.is_empty());
    }
}
