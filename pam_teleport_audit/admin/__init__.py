"""The operator's side: the pam-teleport-audit command and what it is made of.

Nothing here runs inside a login. install/uninstall/status edit PAM files
(pamfile: parse, pamedit: pure edit, atomicwrite: write, pamstack: prove the
lines run), doctor and selftest check a host, search reads the audit log
(auditlog), fleetcheck checks remote logging. What runs in every login is
../pam_module.py, which this side imports for the record format, the options
and the kernel socket: one copy of each.
"""
