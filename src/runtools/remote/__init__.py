"""Many hosts from one terminal: `taro -H TARGET VERB ...` (seed 001's taroc).

A target is a `taro serve` (`http://host:port`, `https://...`) or a host reached with the system
`ssh` (`ssh://[user@]host[:port]`, `user@host`), where `taro VERB --json` runs. Hosts are asked
in parallel, each within --host-timeout; see docs/serve.md.
"""
