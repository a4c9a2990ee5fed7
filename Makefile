# dhcp6ha: the two everyday commands are `make run` and `make test`.
#
# The virtualenv (.venv) is made on first use and the project is installed in
# it (editable, with its test extras) whenever setup.cfg or pyproject.toml
# changes.  The install is an editable one in "compat" mode: it puts this
# directory on sys.path, which is what lets twistd find the plugin in
# ./twisted/plugins (a folder with no __init__.py, merged into Twisted's own
# twisted.plugins package).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dhcp6ha-installed
TESTS ?= tests
JOBS ?= 2
# The failover pair `make run` starts, in this order (the secondary listens,
# the primary connects), and the identities in their certificates (what the
# other's partner-identity names).
PAIR ?= secondary=etc/secondary.ini primary=etc/primary.ini
PKI ?= var/pki
PKI_SERVERS ?= primary=primary.dhcp6ha.test secondary=secondary.dhcp6ha.test

# Also put the source tree on the path explicitly, so that twistd finds the
# plugin even if a future setuptools drops the "compat" editable mode.
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: run run-pair run-single pki test unit lint format mypy bench venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,dev]' --config-settings editable_mode=compat \
		|| $(PY) -m pip install --quiet -e '.[test,dev]'
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $@

# Run the failover pair of etc/primary.ini and etc/secondary.ini in the
# foreground (clients on [::1]:5547 and [::1]:5548, the secondary listening
# for the primary on [::1]:6647), after making their certificates in var/pki
# if they are not there yet.  Output lines are prefixed with "primary" or
# "secondary".  Ctrl-C or SIGTERM stops both cleanly; if one ends by itself,
# the other is stopped and make fails.  `make run CONFIG=FILE` runs one
# server instead (like `make run-single`).
ifdef CONFIG
run: run-single
else
run: run-pair
endif

run-pair: pki
	exec $(PY) -m dhcp6ha.runpair --twistd $(VENV)/bin/twistd --rundir var $(PAIR)

# One server in the foreground, etc/dhcp6ha.ini unless CONFIG=FILE says
# otherwise (etc/dhcp6ha.ini: ::1 port 5547, relayed clients only, leases in
# var/dhcp6ha.sqlite).  Ctrl-C or SIGTERM stops it cleanly.
run-single: $(STAMP)
	mkdir -p var
	exec $(VENV)/bin/twistd --pidfile var/dhcp6ha.pid -n dhcp6ha --config $(or $(CONFIG),etc/dhcp6ha.ini)

# The pair's CA and certificates in var/pki (dhcp6ha-pki): made if missing,
# checked if there (kept as they are; remove var/pki to start over).
pki: $(STAMP)
	mkdir -p var
	$(PY) -m dhcp6ha.pki --quiet $(PKI) $(addprefix --server ,$(PKI_SERVERS))

# The whole suite, integration tests included (those need root and the Debian
# DHCPv6 clients, and say why they skip otherwise).
# JOBS trial workers: the integration tests mostly wait (servers, clients,
# timers), and their namespaces and processes carry each worker's PID.
test: $(STAMP)
	$(PY) -b -m twisted.trial --jobs=$(JOBS) $(TESTS)

# Unit tests only (no namespaces, no real clients).
unit: $(STAMP)
	$(PY) -b -m twisted.trial $$(ls tests/test_*.py | sed 's,/,.,; s,\.py$$,,')

lint: $(STAMP)
	$(VENV)/bin/ruff check dhcp6ha tests twisted bench
	$(VENV)/bin/ruff format --check dhcp6ha tests twisted bench

format: $(STAMP)
	$(VENV)/bin/ruff check --fix dhcp6ha tests twisted bench
	$(VENV)/bin/ruff format dhcp6ha tests twisted bench

mypy: $(STAMP)
	$(VENV)/bin/mypy dhcp6ha twisted/plugins/dhcp6ha_plugin.py

bench: $(STAMP)
	@if ls bench/*.py >/dev/null 2>&1; then \
		for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done; \
	else echo "no benchmarks in bench/"; fi

clean:
	rm -rf _trial_temp* .mypy_cache .ruff_cache twisted/plugins/dropin.cache

# Fault injection against the failover pair (needs root: network namespaces):
# SEEDS schedules of kills, lost databases, partitions, client cuts, clock
# steps and operator partner-downs, every Reply and both databases checked.
# Prints each schedule, the report of any violation (with the command that
# replays its seed), then the figures.  `make chaos SEEDS=50`;
# CHAOS_ARGS="--first-seed 1000 --clients 100" for more; files go to
# var/chaos.
SEEDS ?= 10
CHAOS_ARGS ?=
.PHONY: chaos
chaos: $(STAMP)
	mkdir -p var/chaos
	$(PY) -m dhcp6ha.chaos --seeds $(SEEDS) --workdir var/chaos --quiet $(CHAOS_ARGS)
