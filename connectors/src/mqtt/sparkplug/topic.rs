//! Sparkplug B topics: `spBv1.0/{group}/{type}/{edge_node}[/{device}]` and
//! `spBv1.0/STATE/{host}`.

/// The namespace every Sparkplug B topic starts with.
pub const NAMESPACE: &str = "spBv1.0";

/// What a message is, by its topic's message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An edge node's birth: its metrics with names, aliases, datatypes and values.
    NodeBirth,
    /// An edge node's death (its will, or a clean disconnect).
    NodeDeath,
    /// An edge node's data.
    NodeData,
    /// A command to an edge node.
    NodeCommand,
    /// A device's birth.
    DeviceBirth,
    /// A device's death.
    DeviceDeath,
    /// A device's data.
    DeviceData,
    /// A command to a device.
    DeviceCommand,
}

impl Kind {
    /// The topic level (`NBIRTH`, ...).
    pub fn level(self) -> &'static str {
        match self {
            Kind::NodeBirth => "NBIRTH",
            Kind::NodeDeath => "NDEATH",
            Kind::NodeData => "NDATA",
            Kind::NodeCommand => "NCMD",
            Kind::DeviceBirth => "DBIRTH",
            Kind::DeviceDeath => "DDEATH",
            Kind::DeviceData => "DDATA",
            Kind::DeviceCommand => "DCMD",
        }
    }

    fn parse(level: &str) -> Option<Kind> {
        Some(match level {
            "NBIRTH" => Kind::NodeBirth,
            "NDEATH" => Kind::NodeDeath,
            "NDATA" => Kind::NodeData,
            "NCMD" => Kind::NodeCommand,
            "DBIRTH" => Kind::DeviceBirth,
            "DDEATH" => Kind::DeviceDeath,
            "DDATA" => Kind::DeviceData,
            "DCMD" => Kind::DeviceCommand,
            _ => return None,
        })
    }

    /// Its topic names a device.
    pub fn is_device(self) -> bool {
        matches!(
            self,
            Kind::DeviceBirth | Kind::DeviceDeath | Kind::DeviceData | Kind::DeviceCommand
        )
    }
}

/// A parsed Sparkplug B topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'t> {
    /// A message of an edge node or one of its devices.
    Node {
        /// The group id.
        group: &'t str,
        /// The message type.
        kind: Kind,
        /// The edge node id.
        edge_node: &'t str,
        /// The device id (device messages only).
        device: Option<&'t str>,
    },
    /// A primary host application's state (`spBv1.0/STATE/{host}`).
    State(&'t str),
}

/// Parses `topic` (without allocating: it runs for every message); the error says what is
/// wrong with it.
pub fn parse(topic: &str) -> Result<Topic<'_>, String> {
    let mut levels = topic.split('/');
    if levels.next() != Some(NAMESPACE) {
        return Err(format!("'{topic}' is not in the {NAMESPACE} namespace"));
    }
    let shape = || format!("'{topic}': expected {NAMESPACE}/group/TYPE/edge_node[/device]");
    let (first, second) = (levels.next(), levels.next());
    let (group, kind) = match (first, second) {
        (Some("STATE"), Some(host)) if levels.clone().next().is_none() => {
            return Ok(Topic::State(host));
        }
        (Some(g), Some(k)) => (g, k),
        _ => return Err(shape()),
    };
    let edge_node = levels.next().ok_or_else(shape)?;
    let kind = Kind::parse(kind)
        .ok_or_else(|| format!("'{topic}': '{kind}' is not a Sparkplug message type"))?;
    let device = levels.next();
    let extra = levels.next().is_some();
    let device = match (kind.is_device(), device, extra) {
        (false, None, _) => None,
        (true, Some(d), false) => Some(d),
        (false, Some(_), _) => {
            return Err(format!(
                "'{topic}': a {} topic ends at the edge node",
                kind.level()
            ));
        }
        (true, _, _) => {
            return Err(format!(
                "'{topic}': a {} topic needs one device level",
                kind.level()
            ));
        }
    };
    if group.is_empty() || edge_node.is_empty() || device == Some("") {
        return Err(format!("'{topic}': an empty group, edge node or device id"));
    }
    Ok(Topic::Node {
        group,
        kind,
        edge_node,
        device,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_device_and_state_topics() {
        assert_eq!(
            parse("spBv1.0/Plant1/DDATA/Line2/Pump7"),
            Ok(Topic::Node {
                group: "Plant1",
                kind: Kind::DeviceData,
                edge_node: "Line2",
                device: Some("Pump7"),
            })
        );
        assert_eq!(
            parse("spBv1.0/Plant1/NBIRTH/Line2"),
            Ok(Topic::Node {
                group: "Plant1",
                kind: Kind::NodeBirth,
                edge_node: "Line2",
                device: None,
            })
        );
        assert_eq!(parse("spBv1.0/STATE/scada"), Ok(Topic::State("scada")));
        for bad in [
            "spAv1.0/G/NDATA/E",
            "spBv1.0/G/XDATA/E",
            "spBv1.0/G/NDATA/E/D",
            "spBv1.0/G/DDATA/E",
            "spBv1.0/G/NDATA",
            "spBv1.0//NDATA/E",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
