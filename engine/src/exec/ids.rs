//! Identifiers of the parts of a running project: streams (sources first, then views),
//! pipelines (views and inserts, in dependency order) and sinks. Each is an index into the
//! project's list of that part.

macro_rules! id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(usize);

        impl $name {
            #[doc = concat!("The ", $what, " at position `index`.")]
            pub const fn new(index: usize) -> Self {
                Self(index)
            }

            #[doc = concat!("Position in the project's list of ", $what, "s.")]
            pub const fn index(self) -> usize {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}#{}", $what, self.0)
            }
        }
    };
}

id!(
    /// A stream: a source (the first ids) or a view.
    StreamId,
    "stream"
);
id!(
    /// A view or insert.
    PipelineId,
    "pipeline"
);
id!(
    /// A sink.
    SinkId,
    "sink"
);
