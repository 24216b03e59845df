//! Cron schedules as a domain: parsing 5-field cron expressions and IANA time zones, the fire
//! times they make across daylight-saving changes, and the payload a scheduled run receives.
//!
//! Pure: no I/O, no clock (callers pass the time), no SQL, no HTTP. Fire times come from
//! `croner` (cron matching, with the OCPS / Vixie-cron rules for daylight saving: a fixed-time
//! job whose local time is skipped by a spring-forward runs at the first minute after the gap; a
//! fixed-time job in the hour a fall-back repeats runs once; interval jobs such as `0 * * * *`
//! follow real time) and from `jiff`'s time zone database.

use std::fmt;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde_json::json;

use crate::model::{Environment, Millis};

/// The time zone of a schedule that names none (Trigger.dev's default).
pub const DEFAULT_TIMEZONE: &str = "UTC";
/// How many next fire times a payload's `upcoming` lists (Trigger.dev's five).
pub const UPCOMING: usize = 5;
/// Longest cron expression accepted: five fields with lists fit easily; this bounds parsing.
pub const MAX_CRON_LEN: usize = 256;
/// Longest time zone name accepted (the longest IANA name is about 30 characters).
pub const MAX_TIMEZONE_LEN: usize = 64;

/// Regions of the IANA names `GET /api/v1/timezones` lists (leaving out aliases such as
/// `US/Eastern` and `Etc/GMT+5`, which are still accepted).
const REGIONS: [&str; 10] = [
    "Africa",
    "America",
    "Antarctica",
    "Arctic",
    "Asia",
    "Atlantic",
    "Australia",
    "Europe",
    "Indian",
    "Pacific",
];

/// A cron expression or time zone that cannot make a schedule. Messages start with the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "cron `{expression}` is not a valid cron expression: {reason}; use 5 fields (minute hour day-of-month month day-of-week), e.g. `0 9 * * 1-5`"
    )]
    Cron { expression: String, reason: String },
    #[error("cron `{0}` never fires (no date matches it)")]
    NeverFires(String),
    #[error(
        "timezone `{0}` is not an IANA time zone name; use one like `Europe/Berlin` or `America/New_York` (`kiln schedules timezones` lists them)"
    )]
    Timezone(String),
}

impl SpecError {
    /// The request field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            SpecError::Cron { .. } | SpecError::NeverFires(_) => "cron",
            SpecError::Timezone(_) => "timezone",
        }
    }
}

/// A validated cron expression in a time zone.
#[derive(Clone)]
pub struct CronSchedule {
    expression: String,
    timezone: String,
    cron: Cron,
    tz: TimeZone,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronSchedule")
            .field("expression", &self.expression)
            .field("timezone", &self.timezone)
            .finish()
    }
}

impl CronSchedule {
    /// Parses a 5-field cron expression in an IANA time zone (default UTC). Refuses expressions
    /// that never fire.
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<CronSchedule, SpecError> {
        let shown: String = expression.chars().take(MAX_CRON_LEN).collect();
        let invalid = |reason: String| SpecError::Cron {
            expression: shown.clone(),
            reason,
        };
        if expression.len() > MAX_CRON_LEN {
            return Err(invalid(format!("it is longer than {MAX_CRON_LEN} bytes")));
        }
        let fields = expression.split_whitespace().count();
        if fields != 5 {
            return Err(invalid(format!("it has {fields} fields, not 5")));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(expression)
            .map_err(|e| invalid(e.to_string()))?;
        let name = timezone.unwrap_or(DEFAULT_TIMEZONE).trim();
        let bad_zone = || SpecError::Timezone(name.chars().take(MAX_TIMEZONE_LEN).collect());
        if name.is_empty() || name.len() > MAX_TIMEZONE_LEN {
            return Err(bad_zone());
        }
        let tz = TimeZone::get(name).map_err(|_| bad_zone())?;
        let schedule = CronSchedule {
            expression: expression.split_whitespace().collect::<Vec<_>>().join(" "),
            timezone: tz.iana_name().unwrap_or(name).to_owned(),
            cron,
            tz,
        };
        // An expression like `0 0 30 2 *` parses but matches no date.
        if schedule.next_after(0).is_none() {
            return Err(SpecError::NeverFires(shown));
        }
        Ok(schedule)
    }

    /// The expression, with its fields separated by single spaces.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone's IANA name.
    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    /// A human-readable description of when it fires.
    pub fn describe(&self) -> String {
        self.cron.describe()
    }

    fn zoned(&self, at: Millis) -> Option<Zoned> {
        Timestamp::from_millisecond(at)
            .ok()
            .map(|t| t.to_zoned(self.tz.clone()))
    }

    /// The first fire time strictly after `after`.
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        let mut from = self.zoned(after)?;
        // croner works in whole seconds; a start inside a second could answer that second.
        for _ in 0..2 {
            let next = self
                .cron
                .find_next_occurrence(&from, false)
                .ok()?
                .timestamp()
                .as_millisecond();
            if next > after {
                return Some(next);
            }
            from = self.zoned(next)?;
        }
        None
    }

    /// The next `n` fire times strictly after `after`, in order.
    pub fn next_fires(&self, after: Millis, n: usize) -> Vec<Millis> {
        let mut out = Vec::with_capacity(n);
        let mut at = after;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// The latest fire time at or before `at`.
    pub fn latest_at_or_before(&self, at: Millis) -> Option<Millis> {
        let at_second = at - at.rem_euclid(1_000);
        let from = self.zoned(at_second)?;
        self.cron
            .find_previous_occurrence(&from, true)
            .ok()
            .map(|z| z.timestamp().as_millisecond())
            .filter(|t| *t <= at)
    }
}

/// Declared in a task definition, or created over the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleType {
    Declarative,
    Imperative,
}

impl ScheduleType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleType::Declarative => "DECLARATIVE",
            ScheduleType::Imperative => "IMPERATIVE",
        }
    }

    pub fn parse(s: &str) -> Option<ScheduleType> {
        [ScheduleType::Declarative, ScheduleType::Imperative]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

impl fmt::Display for ScheduleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// `sched_…`.
    pub id: String,
    pub environment: Environment,
    pub kind: ScheduleType,
    pub task_id: String,
    /// The cron expression (validated when stored).
    pub cron: String,
    /// IANA time zone name.
    pub timezone: String,
    pub external_id: Option<String>,
    /// Imperative schedules only: creating again with the key updates this schedule.
    pub deduplication_key: Option<String>,
    pub active: bool,
    /// When it fires next; `None` while inactive.
    pub next_fire_at: Option<Millis>,
    /// The timestamp of the last fire that made a run.
    pub last_fire_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What one fire of a due schedule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePlan {
    /// The tick the run is for: the latest tick that has come. After a stop across several
    /// ticks, they make this one run.
    pub timestamp: Millis,
    /// The fire times after `now`; the first is the next fire.
    pub upcoming: Vec<Millis>,
}

impl FirePlan {
    /// Plans the fire of a schedule that was due at `due` (a tick), seen at `now`.
    pub fn new(cron: &CronSchedule, due: Millis, now: Millis) -> FirePlan {
        let timestamp = cron
            .latest_at_or_before(now)
            .filter(|t| *t >= due)
            .unwrap_or(due);
        FirePlan {
            timestamp,
            upcoming: cron.next_fires(now.max(timestamp), UPCOMING),
        }
    }

    pub fn next_fire_at(&self) -> Option<Millis> {
        self.upcoming.first().copied()
    }
}

/// An instant as ISO 8601 in UTC, as the API and payloads show times.
pub fn iso(ms: Millis) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The payload of a scheduled run: Trigger.dev's `ScheduledTaskPayload` (times in ISO 8601 UTC;
/// `lastTimestamp` and `externalId` left out when there are none).
pub fn payload(schedule: &Schedule, plan: &FirePlan) -> String {
    let mut p = json!({
        "type": schedule.kind.as_str(),
        "timestamp": iso(plan.timestamp),
        "timezone": schedule.timezone,
        "scheduleId": schedule.id,
        "upcoming": plan.upcoming.iter().map(|t| iso(*t)).collect::<Vec<_>>(),
    });
    if let Some(last) = schedule.last_fire_at {
        p["lastTimestamp"] = json!(iso(last));
    }
    if let Some(external) = &schedule.external_id {
        p["externalId"] = json!(external);
    }
    p.to_string()
}

/// The idempotency key of the run of one fire: a fire can make only one run.
pub fn fire_key(schedule_id: &str, timestamp: Millis) -> String {
    format!("{schedule_id}:{}", iso(timestamp))
}

/// The IANA time zone names schedules can use, sorted, with `UTC` first unless `exclude_utc`.
pub fn timezones(exclude_utc: bool) -> Vec<String> {
    let mut names: Vec<String> = jiff::tz::db()
        .available()
        .map(|n| n.as_str().to_owned())
        .filter(|n| {
            n.split_once('/')
                .is_some_and(|(region, _)| REGIONS.contains(&region))
        })
        .collect();
    names.sort();
    names.dedup();
    if !exclude_utc {
        names.insert(0, DEFAULT_TIMEZONE.to_owned());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Millis {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn fires(expression: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        let cron = CronSchedule::parse(expression, Some(tz)).unwrap();
        cron.next_fires(at(after), n)
            .into_iter()
            .map(|t| {
                Timestamp::from_millisecond(t)
                    .unwrap()
                    .to_zoned(TimeZone::get(tz).unwrap())
                    .strftime("%Y-%m-%dT%H:%M%:z")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn five_fields_parse_with_utc_by_default() {
        let cron = CronSchedule::parse(" 0  9 * *  MON-FRI ", None).unwrap();
        assert_eq!(cron.expression(), "0 9 * * MON-FRI");
        assert_eq!(cron.timezone(), "UTC");
        assert_eq!(
            cron.next_after(at("2027-01-01T10:00:00Z")), // a Friday
            Some(at("2027-01-04T09:00:00Z"))
        );
        assert!(!cron.describe().is_empty());
        assert_eq!(
            CronSchedule::parse("0 0 L * *", Some("Europe/Berlin"))
                .unwrap()
                .timezone(),
            "Europe/Berlin"
        );
    }

    #[test]
    fn bad_expressions_name_the_cron_field() {
        for bad in [
            "",
            "* * * *",
            "0 * * * * *",
            "@daily",
            "61 * * * *",
            "* 24 * * *",
            "x * * * *",
            "0 0 1 13 *",
        ] {
            let e = CronSchedule::parse(bad, None).unwrap_err();
            assert_eq!(e.field(), "cron", "{bad}: {e}");
            assert!(e.to_string().starts_with("cron `"), "{e}");
        }
        let long = "1,".repeat(200) + "1 * * * *";
        assert!(
            CronSchedule::parse(&long, None)
                .unwrap_err()
                .to_string()
                .contains("longer than")
        );
        let never = CronSchedule::parse("0 0 30 2 *", None).unwrap_err();
        assert_eq!(never, SpecError::NeverFires("0 0 30 2 *".into()));
    }

    #[test]
    fn unknown_time_zones_name_the_timezone_field() {
        for bad in ["Mars/Olympus_Mons", "", "Europe/Berlin/x", &"A".repeat(100)] {
            let e = CronSchedule::parse("0 * * * *", Some(bad)).unwrap_err();
            assert_eq!(e.field(), "timezone", "{bad}");
        }
    }

    #[test]
    fn spring_forward_in_new_york_runs_a_skipped_time_once_after_the_gap() {
        // 2027-03-14: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist that day.
        assert_eq!(
            fires("30 2 * * *", "America/New_York", "2027-03-13T12:00:00Z", 3),
            [
                "2027-03-14T03:00-04:00",
                "2027-03-15T02:30-04:00",
                "2027-03-16T02:30-04:00"
            ]
        );
        // An hourly job skips the missing hour and keeps to real hours.
        assert_eq!(
            fires("0 * * * *", "America/New_York", "2027-03-14T05:30:00Z", 3),
            [
                "2027-03-14T01:00-05:00",
                "2027-03-14T03:00-04:00",
                "2027-03-14T04:00-04:00"
            ]
        );
    }

    #[test]
    fn fall_back_in_new_york_runs_a_repeated_time_once() {
        // 2027-11-07: 02:00 EDT falls back to 01:00 EST, so 01:30 happens twice.
        assert_eq!(
            fires("30 1 * * *", "America/New_York", "2027-11-06T12:00:00Z", 2),
            ["2027-11-07T01:30-04:00", "2027-11-08T01:30-05:00"]
        );
        // An hourly job fires in both passes of the repeated hour: every real hour once.
        assert_eq!(
            fires("0 * * * *", "America/New_York", "2027-11-07T04:30:00Z", 3),
            [
                "2027-11-07T01:00-04:00",
                "2027-11-07T01:00-05:00",
                "2027-11-07T02:00-05:00"
            ]
        );
    }

    #[test]
    fn daylight_saving_in_berlin() {
        // 2027-03-28: 02:00 CET jumps to 03:00 CEST; 2027-10-31: 03:00 CEST falls back to 02:00.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2027-03-27T12:00:00Z", 2),
            ["2027-03-28T03:00+02:00", "2027-03-29T02:30+02:00"]
        );
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2027-10-30T12:00:00Z", 2),
            ["2027-10-31T02:30+02:00", "2027-11-01T02:30+01:00"]
        );
        // Midnight stays midnight local time on both sides of the change.
        assert_eq!(
            fires("0 0 * * *", "Europe/Berlin", "2027-10-30T12:00:00Z", 2),
            ["2027-10-31T00:00+02:00", "2027-11-01T00:00+01:00"]
        );
    }

    #[test]
    fn a_late_fire_runs_once_for_the_latest_tick_and_keeps_to_the_cron() {
        let cron = CronSchedule::parse("0 * * * *", None).unwrap();
        let plan = FirePlan::new(
            &cron,
            at("2027-01-01T10:00:00Z"),
            at("2027-01-01T14:20:00Z"),
        );
        assert_eq!(plan.timestamp, at("2027-01-01T14:00:00Z"));
        assert_eq!(plan.next_fire_at(), Some(at("2027-01-01T15:00:00Z")));
        assert_eq!(plan.upcoming.len(), UPCOMING);
        assert_eq!(plan.upcoming[4], at("2027-01-01T19:00:00Z"));

        // On time: the tick itself, and the next five after it.
        let plan = FirePlan::new(
            &cron,
            at("2027-01-01T10:00:00Z"),
            at("2027-01-01T10:00:00Z"),
        );
        assert_eq!(plan.timestamp, at("2027-01-01T10:00:00Z"));
        assert_eq!(plan.next_fire_at(), Some(at("2027-01-01T11:00:00Z")));
    }

    #[test]
    fn the_payload_has_trigger_dev_fields() {
        let schedule = Schedule {
            id: "sched_1".into(),
            environment: Environment {
                id: "env_1".into(),
                project_slug: "default".into(),
                slug: "dev".into(),
                limits: Default::default(),
            },
            kind: ScheduleType::Imperative,
            task_id: "echo".into(),
            cron: "0 * * * *".into(),
            timezone: "UTC".into(),
            external_id: Some("user-1".into()),
            deduplication_key: Some("k".into()),
            active: true,
            next_fire_at: None,
            last_fire_at: Some(at("2027-01-01T09:00:00Z")),
            created_at: 0,
            updated_at: 0,
        };
        let cron = CronSchedule::parse(&schedule.cron, None).unwrap();
        let plan = FirePlan::new(
            &cron,
            at("2027-01-01T10:00:00Z"),
            at("2027-01-01T10:00:00Z"),
        );
        let p: serde_json::Value = serde_json::from_str(&payload(&schedule, &plan)).unwrap();
        assert_eq!(p["type"], "IMPERATIVE");
        assert_eq!(p["timestamp"], "2027-01-01T10:00:00Z");
        assert_eq!(p["lastTimestamp"], "2027-01-01T09:00:00Z");
        assert_eq!(p["timezone"], "UTC");
        assert_eq!(p["scheduleId"], "sched_1");
        assert_eq!(p["externalId"], "user-1");
        assert_eq!(p["upcoming"].as_array().unwrap().len(), 5);
        assert_eq!(p["upcoming"][0], "2027-01-01T11:00:00Z");
        assert_eq!(
            fire_key("sched_1", plan.timestamp),
            "sched_1:2027-01-01T10:00:00Z"
        );
    }

    #[test]
    fn time_zones_list_iana_names() {
        let all = timezones(false);
        assert_eq!(all[0], "UTC");
        assert!(all.iter().any(|z| z == "Europe/Berlin"));
        assert!(all.iter().any(|z| z == "America/New_York"));
        let without = timezones(true);
        assert!(!without.iter().any(|z| z == "UTC"));
        assert_eq!(without.len() + 1, all.len());
        for zone in without.iter().take(50) {
            CronSchedule::parse("0 * * * *", Some(zone)).unwrap();
        }
    }
}
