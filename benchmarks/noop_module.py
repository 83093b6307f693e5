"""A pam_python module that does nothing: stack (b) of the login benchmark.

It measures what pam_python itself costs a login (loading libpython,
starting and finalising an interpreter per PAM handle, compiling this file).
"""


def pam_sm_acct_mgmt(pamh, flags, args):
    return pamh.PAM_IGNORE


def pam_sm_open_session(pamh, flags, args):
    return pamh.PAM_IGNORE


def pam_sm_close_session(pamh, flags, args):
    return pamh.PAM_IGNORE
