//! Which nodes a source reads: the `nodes` list (`[name =] ns=2;s=…`, `ns=2;i=…`,
//! `nsu=<uri>;s=…`) and the `browse` folder, resolved against the server once connected
//! (namespace URIs to indices, the folder to the variables below it).

use std::collections::HashSet;
use std::str::FromStr;

use opcua::client::Session;
use opcua::types::{
    BrowseDescription, BrowseDirection, BrowseResultMask, NodeClass, NodeClassMask, NodeId,
    ReadValueId, ReferenceTypeId, TimestampsToReturn, VariableId, Variant,
};

/// A NodeId as written: with a namespace index, or with a namespace URI resolved later.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeSpec {
    /// `ns=<index>;<type>=<id>` (or no `ns=`: namespace 0).
    Id(NodeId),
    /// `nsu=<uri>;<type>=<id>`: the index is looked up on the server.
    Uri {
        /// Namespace URI.
        uri: String,
        /// The identifier, namespace index still 0.
        id: NodeId,
    },
}

impl NodeSpec {
    /// Parses one NodeId string.
    pub fn parse(s: &str) -> Result<NodeSpec, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "'{s}' is not a NodeId (expected e.g. 'ns=2;s=Machine1.Temperature', 'ns=2;i=1001' or 'nsu=urn:plant;s=Line1')"
            )
        };
        if let Some(rest) = s.strip_prefix("nsu=") {
            let (uri, id) = rest.split_once(';').ok_or_else(bad)?;
            let id = NodeId::from_str(id.trim()).map_err(|_| bad())?;
            if uri.trim().is_empty() || id.namespace != 0 {
                return Err(bad());
            }
            return Ok(NodeSpec::Uri {
                uri: uri.trim().to_string(),
                id,
            });
        }
        NodeId::from_str(s).map(NodeSpec::Id).map_err(|_| bad())
    }

    /// The NodeId, given the server's namespace array; `None` when the URI is not there.
    pub fn resolve(&self, namespaces: &[String]) -> Option<NodeId> {
        match self {
            NodeSpec::Id(id) => Some(id.clone()),
            NodeSpec::Uri { uri, id } => {
                let ns = namespaces.iter().position(|n| n == uri)?;
                let mut id = id.clone();
                id.namespace = u16::try_from(ns).ok()?;
                Some(id)
            }
        }
    }
}

impl std::fmt::Display for NodeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeSpec::Id(id) => write!(f, "{id}"),
            NodeSpec::Uri { uri, id } => write!(f, "nsu={uri};{}", id.identifier),
        }
    }
}

/// One entry of the `nodes` list.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// The column (wide rows) or node name (long rows); the NodeId string when not given.
    pub name: String,
    /// The node.
    pub spec: NodeSpec,
}

/// Parses the `nodes` list: entries separated by commas or new lines, each `name = NodeId`
/// or a bare NodeId.
pub fn parse_list(v: &str) -> Result<Vec<Listed>, String> {
    let mut out: Vec<Listed> = Vec::new();
    for item in v
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        // a NodeId holds '=' too: a name is what comes before an '=' that precedes 'ns'
        let (name, id) = match item.split_once('=') {
            Some((n, rest)) if !n.trim().starts_with("ns") && !n.trim().contains(';') => {
                (n.trim().to_string(), rest.trim())
            }
            _ => (item.to_string(), item),
        };
        let spec = NodeSpec::parse(id)?;
        if name.is_empty() {
            return Err(format!("'{item}': the name before '=' is empty"));
        }
        if out.iter().any(|l| l.name.eq_ignore_ascii_case(&name)) {
            return Err(format!("'{name}' is listed twice"));
        }
        out.push(Listed { name, spec });
    }
    if out.is_empty() {
        return Err("no node listed".into());
    }
    Ok(out)
}

/// A node to read, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Column or node name.
    pub name: String,
    /// The NodeId on this server.
    pub id: NodeId,
}

/// The server's namespace array (index → URI).
pub async fn namespaces(session: &Session) -> Result<Vec<String>, String> {
    let read = ReadValueId::from(NodeId::from(VariableId::Server_NamespaceArray));
    let values = session
        .read(&[read], TimestampsToReturn::Neither, 0.0)
        .await
        .map_err(|e| format!("reading the namespace array: {e}"))?;
    match values.into_iter().next().and_then(|v| v.value) {
        Some(Variant::Array(a)) => Ok(a
            .values
            .into_iter()
            .map(|v| match v {
                Variant::String(s) => s.as_ref().to_string(),
                _ => String::new(),
            })
            .collect()),
        other => Err(format!("the namespace array is {other:?}")),
    }
}

/// How deep `browse` descends below its folder.
const BROWSE_DEPTH: usize = 8;

/// Every variable below `root` (following hierarchical references, at most
/// [`BROWSE_DEPTH`] levels), named by its browse path below `root` joined with `/`.
pub async fn browse(session: &Session, root: &NodeId) -> Result<Vec<Node>, String> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let mut level = vec![(root.clone(), String::new())];
    for _ in 0..BROWSE_DEPTH {
        if level.is_empty() {
            break;
        }
        let descriptions: Vec<BrowseDescription> = level
            .iter()
            .map(|(id, _)| BrowseDescription {
                node_id: id.clone(),
                browse_direction: BrowseDirection::Forward,
                reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                include_subtypes: true,
                node_class_mask: (NodeClassMask::OBJECT | NodeClassMask::VARIABLE).bits(),
                result_mask: BrowseResultMask::All as u32,
            })
            .collect();
        let mut next = Vec::new();
        for (descriptions, parents) in descriptions.chunks(100).zip(level.chunks(100)) {
            let results = session
                .browse(descriptions, 0, None)
                .await
                .map_err(|e| format!("browsing {root}: {e}"))?;
            for (mut result, (parent, path)) in results.into_iter().zip(parents) {
                loop {
                    if result.status_code.is_bad() {
                        return Err(format!("browsing {parent}: {}", result.status_code));
                    }
                    for r in result.references.take().unwrap_or_default() {
                        let id = r.node_id.node_id;
                        if !seen.insert(id.clone()) {
                            continue;
                        }
                        let name = r.browse_name.name.as_ref().to_string();
                        let path = if path.is_empty() {
                            name
                        } else {
                            format!("{path}/{name}")
                        };
                        if r.node_class == NodeClass::Variable {
                            found.push(Node {
                                name: path.clone(),
                                id: id.clone(),
                            });
                        }
                        next.push((id, path));
                    }
                    // the server sends large folders in parts
                    if result.continuation_point.is_null_or_empty() {
                        break;
                    }
                    result = session
                        .browse_next(false, &[result.continuation_point])
                        .await
                        .map_err(|e| format!("browsing {parent}: {e}"))?
                        .pop()
                        .ok_or_else(|| format!("browsing {parent}: no result"))?;
                }
            }
        }
        level = next;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists() {
        let l =
            parse_list("temp = ns=2;s=Machine1.Temperature, ns=2;i=1001\n rpm=nsu=urn:plant;s=A=B")
                .unwrap();
        assert_eq!(l[0].name, "temp");
        assert_eq!(
            l[0].spec,
            NodeSpec::Id(NodeId::new(2, "Machine1.Temperature"))
        );
        assert_eq!(l[1].name, "ns=2;i=1001");
        assert_eq!(l[1].spec, NodeSpec::Id(NodeId::new(2, 1001u32)));
        assert_eq!(
            l[2].spec,
            NodeSpec::Uri {
                uri: "urn:plant".into(),
                id: NodeId::new(0, "A=B")
            }
        );
        let ns = vec![
            "http://opcfoundation.org/UA/".into(),
            "x".into(),
            "urn:plant".into(),
        ];
        assert_eq!(l[2].spec.resolve(&ns), Some(NodeId::new(2, "A=B")));
        assert_eq!(l[2].spec.resolve(&ns[..2]), None);
        assert!(parse_list("t = ns=2;q=1").is_err());
        assert!(parse_list("a = ns=2;i=1, A = ns=2;i=2").is_err());
        assert!(parse_list(" , ").is_err());
        assert!(NodeSpec::parse("nsu=;s=x").is_err());
    }
}
