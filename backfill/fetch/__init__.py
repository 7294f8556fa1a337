"""`backfill fetch`: pull a complete deploy history from Jenkins, GitLab or GitHub into an export file.

`core` holds what every source shares (token, HTTP session, output and state, progress); one module
per source system (`jenkins`, `gitlab`, `github`) knows its API's paging and completeness checks;
`cli` is the thin command on top.
"""
