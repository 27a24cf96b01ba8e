"""CI tools run by tox outside pytest: the quality report, the coverage gate, the secret scan
and actionlint."""
