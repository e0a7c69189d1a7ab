//! Findings and their rendering: one line each, ✓ / ! / ✗, what, and the
//! fix. Pure.

use serde::Serialize;

/// The part of the installation a finding is about, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    Api,
    Webhook,
    Controller,
    Dapr,
    Functions,
}

impl Section {
    pub fn title(self) -> &'static str {
        match self {
            Section::Api => "API and CRDs",
            Section::Webhook => "Webhook registration",
            Section::Controller => "Controller",
            Section::Dapr => "Dapr",
            Section::Functions => "Functions",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Ok => "✓",
            Status::Warn => "!",
            Status::Fail => "✗",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub section: Section,
    /// A stable identifier of the check (`webhook.ca-bundle`), for scripts.
    pub check: &'static str,
    pub status: Status,
    pub message: String,
    /// The command or change that fixes it (for warnings and failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(section: Section, check: &'static str, message: impl Into<String>) -> Self {
        Finding {
            section,
            check,
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }

    pub fn warn(
        section: Section,
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            status: Status::Warn,
            fix: Some(fix.into()),
            ..Finding::ok(section, check, message)
        }
    }

    pub fn fail(
        section: Section,
        check: &'static str,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            status: Status::Fail,
            fix: Some(fix.into()),
            ..Finding::ok(section, check, message)
        }
    }
}

/// The whole answer of `check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Why the cluster could not be reached (then there are no findings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
    pub findings: Vec<Finding>,
}

/// Exit status: nothing failed.
pub const EXIT_OK: u8 = 0;
/// Exit status: at least one ✗.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: the cluster could not be reached.
pub const EXIT_UNREACHABLE: u8 = 2;

impl Report {
    pub fn unreachable(reason: impl Into<String>) -> Self {
        Report {
            unreachable: Some(reason.into()),
            findings: Vec::new(),
        }
    }

    pub fn failures(&self) -> usize {
        self.count(Status::Fail)
    }

    pub fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }

    pub fn exit_code(&self) -> u8 {
        if self.unreachable.is_some() {
            EXIT_UNREACHABLE
        } else if self.failures() > 0 {
            EXIT_FAILED
        } else {
            EXIT_OK
        }
    }

    /// The human report: a heading per section, a line per finding, the fix
    /// indented under it, and a summary.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        if let Some(reason) = &self.unreachable {
            let _ = writeln!(out, "✗ cannot reach the cluster: {reason}");
            let _ = writeln!(
                out,
                "    fix: check the kubeconfig context (kubectl cluster-info)"
            );
            return out;
        }
        let mut findings: Vec<&Finding> = self.findings.iter().collect();
        findings.sort_by_key(|f| f.section);
        let mut section = None;
        for f in findings {
            if section != Some(f.section) {
                if section.is_some() {
                    out.push('\n');
                }
                let _ = writeln!(out, "{}", f.section.title());
                section = Some(f.section);
            }
            let _ = writeln!(out, "  {} {}", f.status.mark(), f.message);
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "      fix: {fix}");
            }
        }
        let warnings = self.count(Status::Warn);
        let _ = writeln!(
            out,
            "\n{} ok, {warnings} warning{}, {} failed",
            self.count(Status::Ok),
            if warnings == 1 { "" } else { "s" },
            self.count(Status::Fail)
        );
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_worst_finding() {
        let mut r = Report::default();
        assert_eq!(r.exit_code(), EXIT_OK);
        r.findings
            .push(Finding::warn(Section::Dapr, "dapr.x", "w", "do"));
        assert_eq!(r.exit_code(), EXIT_OK);
        r.findings
            .push(Finding::fail(Section::Api, "api.x", "f", "do"));
        assert_eq!(r.exit_code(), EXIT_FAILED);
        assert_eq!(Report::unreachable("no").exit_code(), EXIT_UNREACHABLE);
    }

    #[test]
    fn text_groups_by_section_in_order_with_fixes() {
        let r = Report {
            unreachable: None,
            findings: vec![
                Finding::fail(Section::Webhook, "w", "bad bundle", "restart it"),
                Finding::ok(Section::Api, "a", "Kubernetes v1.33.0"),
            ],
        };
        assert_eq!(
            r.to_text(),
            "API and CRDs\n  ✓ Kubernetes v1.33.0\n\nWebhook registration\n  ✗ bad bundle\n      fix: restart it\n\n1 ok, 0 warnings, 1 failed\n"
        );
    }

    #[test]
    fn json_names_every_field() {
        let r = Report {
            unreachable: None,
            findings: vec![Finding::warn(Section::Functions, "functions.x", "m", "f")],
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"findings": [{"section": "functions", "check": "functions.x",
                "status": "warn", "message": "m", "fix": "f"}]})
        );
    }
}
