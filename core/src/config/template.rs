//! Topic and record-key templates: text with placeholders, parsed into
//! pieces by the same type that renders them, so that what the config
//! accepts is exactly what the producer writes.

use crate::model::is_name_byte;

/// A value a placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Tenant,
    Category,
    DeviceId,
    App,
}

impl Field {
    const ALL: [(Field, &'static str); 4] = [
        (Field::Tenant, "{tenant}"),
        (Field::Category, "{category}"),
        (Field::DeviceId, "{device_id}"),
        (Field::App, "{app}"),
    ];
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// What a template's placeholders are replaced with; `None` where an upload
/// has no such value.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    pub tenant: &'a str,
    pub category: &'a str,
    pub device_id: Option<&'a str>,
    pub app: Option<&'a str>,
}

/// A parsed template (`events.{category}`, `{tenant}:{device_id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
    /// Bytes of literal text, to size the rendered string.
    text_len: usize,
}

impl Template {
    /// A topic template: the placeholders `{category}` and `{tenant}`, and
    /// otherwise only the characters Kafka allows in topic names, never
    /// longer than Kafka's 249 characters once rendered.
    pub fn topic(source: &str) -> Result<Template, String> {
        if source.is_empty() {
            return Err("empty".into());
        }
        let template = Template::parse(source, &[Field::Category, Field::Tenant]);
        let texts_ok = template.pieces.iter().all(|p| match p {
            Piece::Text(text) => text.bytes().all(is_name_byte),
            Piece::Field(_) => true,
        });
        if !texts_ok {
            return Err(format!(
                "'{source}' may hold only A-Z a-z 0-9 _ . - and the placeholders {{category}} and {{tenant}}"
            ));
        }
        // A category and a tenant name are at most 64 bytes each; Kafka allows 249.
        let fields = template.pieces.len()
            - template
                .pieces
                .iter()
                .filter(|p| matches!(p, Piece::Text(_)))
                .count();
        if fields == 0 && (source == "." || source == "..") {
            return Err(format!("'{source}' is not a topic name Kafka takes"));
        }
        if template.text_len + 64 * fields > 249 {
            return Err(format!(
                "'{source}' can make topic names longer than Kafka's 249 characters"
            ));
        }
        Ok(template)
    }

    /// A record-key template: any text with the placeholders `{tenant}`,
    /// `{category}`, `{device_id}`, `{app}`.
    pub fn key(source: &str) -> Result<Template, String> {
        let template = Template::parse(source, &Field::ALL.map(|(field, _)| field));
        let stray = template.pieces.iter().any(|p| match p {
            Piece::Text(text) => text.contains(['{', '}']),
            Piece::Field(_) => false,
        });
        if stray {
            return Err(format!(
                "'{source}' has an unknown placeholder; use {{tenant}}, {{category}}, {{device_id}} or {{app}}"
            ));
        }
        Ok(template)
    }

    /// Splits `source` into text and the placeholders of `fields`; any other
    /// brace stays text (for the callers to refuse).
    fn parse(source: &str, fields: &[Field]) -> Template {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while !rest.is_empty() {
            let placeholder = Field::ALL
                .iter()
                .find(|(field, name)| fields.contains(field) && rest.starts_with(name));
            match placeholder {
                Some((field, name)) => {
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Field(*field));
                    rest = &rest[name.len()..];
                }
                None => {
                    let next = rest.chars().next().map_or(1, char::len_utf8);
                    text.push_str(&rest[..next]);
                    rest = &rest[next..];
                }
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        let text_len = pieces
            .iter()
            .map(|p| match p {
                Piece::Text(text) => text.len(),
                Piece::Field(_) => 0,
            })
            .sum();
        Template { pieces, text_len }
    }

    /// The text with every placeholder replaced, in one pass (a value is
    /// never read as a placeholder: a device_id `{app}` is that text); `None`
    /// when a placeholder has no value.
    pub fn render(&self, values: &Values<'_>) -> Option<String> {
        let mut out = String::with_capacity(self.text_len + 32);
        for piece in &self.pieces {
            out.push_str(match piece {
                Piece::Text(text) => text,
                Piece::Field(Field::Tenant) => values.tenant,
                Piece::Field(Field::Category) => values.category,
                Piece::Field(Field::DeviceId) => values.device_id?,
                Piece::Field(Field::App) => values.app?,
            });
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(device_id: Option<&'a str>, app: Option<&'a str>) -> Values<'a> {
        Values {
            tenant: "acme",
            category: "PERF",
            device_id,
            app,
        }
    }

    #[test]
    fn topics_render_category_and_tenant() {
        let t = Template::topic("events.{tenant}.{category}").unwrap();
        assert_eq!(t.render(&values(None, None)).unwrap(), "events.acme.PERF");
        assert!(Template::topic("").is_err());
        assert!(Template::topic("x/{category}").is_err());
        assert!(Template::topic("events.{device_id}").is_err());
        assert!(Template::topic(&format!("{}{{category}}", "x".repeat(185))).is_ok());
        assert!(Template::topic(&format!("{}{{category}}", "x".repeat(186))).is_err());
    }

    proptest::proptest! {
        /// Whatever topic template the config takes, with whatever tenant
        /// name and category it and an upload take, the topic is one
        /// Kafka takes: 1 to 249 of `A-Z a-z 0-9 _ . -`, not `.` or `..`.
        #[test]
        fn every_topic_a_taken_template_renders_is_a_kafka_topic(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::string::string_regex("[a-z.{}_-]{0,70}").unwrap(),
                    proptest::strategy::Just("{category}".to_owned()),
                    proptest::strategy::Just("{tenant}".to_owned()),
                    proptest::strategy::Just(".".to_owned()),
                ],
                1..6,
            ),
            tenant in "[A-Za-z0-9_.-]{1,64}",
            category in "[A-Za-z0-9_.-]{1,64}",
        ) {
            let source = pieces.concat();
            proptest::prop_assume!(crate::model::is_valid_name(&tenant));
            proptest::prop_assume!(crate::model::is_valid_category(&category));
            if let Ok(template) = Template::topic(&source) {
                let values = Values { tenant: &tenant, category: &category, device_id: None, app: None };
                let topic = template.render(&values).unwrap();
                proptest::prop_assert!((1..=249).contains(&topic.len()), "{source} → {topic}");
                proptest::prop_assert!(topic.bytes().all(is_name_byte), "{source} → {topic}");
                proptest::prop_assert!(topic != "." && topic != "..", "{source} → {topic}");
            }
        }
    }

    #[test]
    fn keys_are_rendered_in_one_pass() {
        let t = Template::key("{tenant}:{device_id}").unwrap();
        assert_eq!(t.render(&values(Some("d-1"), None)).unwrap(), "acme:d-1");
        // A client's value is never read as a placeholder.
        assert_eq!(
            t.render(&values(Some("{app}"), Some("shop"))).unwrap(),
            "acme:{app}"
        );
        // A placeholder without a value: no key from the template.
        assert_eq!(t.render(&values(None, None)), None);
        let t = Template::key("{app}/{category}/é").unwrap();
        assert_eq!(
            t.render(&values(None, Some("shop"))).unwrap(),
            "shop/PERF/é"
        );
        assert!(Template::key("{user}").is_err());
        assert!(Template::key("a}").is_err());
    }

    #[test]
    fn templates_are_checked() {
        assert!(Template::topic("events.{category}").is_ok());
        assert!(Template::topic("{tenant}.{category}").is_ok());
        assert!(Template::topic("events/{category}").is_err());
        assert!(Template::topic("").is_err());
        assert!(Template::topic(&"x".repeat(200)).is_ok());
        assert!(Template::topic(&format!("{}{{category}}", "x".repeat(200))).is_err());
        assert!(Template::key("{tenant}:{device_id}").is_ok());
        assert!(Template::key("{user}").is_err());
    }
}
