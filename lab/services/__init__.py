"""The use cases, independent of HTTP and the CLI: DP queries (``queries``) and governance
(applications, grants, exports, audit: ``governance``)."""
