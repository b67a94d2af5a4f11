"""Who checks passwords when it is not the storage's SCRAM keys
(``[host.auth]``): :mod:`vinespy.auth.ldap` binds to an LDAP directory."""
