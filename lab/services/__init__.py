"""The use cases, independent of HTTP and the CLI: DP queries (``queries``), governance
(applications, grants, exports, audit: ``governance``) and onboarding (``onboarding``)."""
