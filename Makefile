# station-stack: `make station` deploys the lab station, `make test` runs everything.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Molecule and ansible-lint write caches under ~/.ansible; keep them in the tree.
export ANSIBLE_HOME := $(CURDIR)/.cache/ansible
export ANSIBLE_FORCE_COLOR := false
export PY_COLORS := 0
# Prints the lab image reference, building it only when its recipe changed.
LAB_IMAGE = $$(lab/image/build.sh)

.PHONY: docs help bootstrap station station-service station-down artifacts test lint unit chaos bench molecule molecule-a molecule-b molecule-c \
  molecule-lanes-check image clean

help:
	@echo "make station       deploy the lab station (container with systemd) and print how to reach it"
	@echo "make station-service STATE=stopped|started|restarted  control station.target on the lab station"
	@echo "make station-down  remove the lab station"
	@echo "make test          yamllint, ansible-lint, Python tests, chaos suite and every molecule scenario,"
	@echo "                   then a table of where the time went (per stage and molecule step)"
	@echo "make chaos         the fault suite alone (bounded, about 5 minutes)"
	@echo "make bench         bridge, converge and fleet benchmarks, one table, written to docs/benchmarks.md"
	@echo "make artifacts     fill .cache/artifacts for offline stations (Debian .debs, Grafana, bridge wheels)"
	@echo "make docs          rewrite the READMEs' generated blocks (role variables, the bridge's configuration reference)"

bootstrap:
	@lab/bootstrap-host.sh
	@lab/bootstrap-python.sh

image: bootstrap
	@lab/image/build.sh >/dev/null

# The lab inventory's secrets are vault-encrypted with a documented, non-secret lab password.
station station-service: export ANSIBLE_VAULT_PASSWORD_FILE := $(CURDIR)/inventories/local/lab-vault-password

station: image
	STATION_LAB_IMAGE=$(LAB_IMAGE) ansible-playbook -i localhost, lab/up.yml
	ansible-playbook -i inventories/local playbooks/site.yml
	ansible-playbook -i inventories/local playbooks/validate.yml
	@lab/station-info.sh

# make station-service STATE=stopped|started|restarted: station.target on the lab station.
station-service: bootstrap
	ansible-playbook -i inventories/local playbooks/service.yml -e state=$(or $(STATE),started)

station-down: bootstrap
	ansible-playbook -i localhost, lab/down.yml

# Everything an offline station installs (playbooks/artifacts.yml); ARTIFACTS_DIR to put it elsewhere.
artifacts: bootstrap
	ansible-playbook -i localhost, playbooks/artifacts.yml $(if $(ARTIFACTS_DIR),-e artifacts_dir=$(ARTIFACTS_DIR))

# Each stage timed (lab/timing.py): a table of where the time went, per stage and per molecule
# scenario step, printed at the end, also when a stage fails. lint first (a typo fails in a
# minute), then lanes side by side: most of a stage's time is waiting (containers booting, apt,
# SSH round trips, a test's timers), so three lanes on two cores take about a third of the
# stages' sum. Each stage's whole output is printed when it ends (and kept in .cache/logs/);
# molecule's steps and pytest's results show as they happen.
# stage:minutes: a stage still running after its minutes is stopped, with the stacks of its Python
# test processes in the log, instead of hanging until CI's own limit. About 1.5x to 2x what each
# takes here; lint plus the longest lane stays under CI's 90 minutes.
TEST_FIRST := lint:5
# The machine is saturated (two cores, about 1.9 busy on average): the lanes are balanced so that
# they end together (measured per stage in the time table): unit then the offline scenario;
# station and redis then chaos; fleet, influxdb and victoriametrics.
TEST_LANES := unit:35,molecule-c:25 molecule-a:40,chaos:15 molecule-b:50
# Molecule's scenarios in the three molecule stages; every scenario in exactly one.
MOLECULE_A := station redis
MOLECULE_B := fleet influxdb victoriametrics
MOLECULE_C := offline
MOLECULE_LANES := $(MOLECULE_A) $(MOLECULE_B) $(MOLECULE_C)
test: image molecule-lanes-check
	@python lab/timing.py reset
	@status=0; python lab/timing.py run $(firstword $(subst :, ,$(TEST_FIRST))) --limit $(lastword $(subst :, ,$(TEST_FIRST))) \
	    -- $(MAKE) --no-print-directory $(firstword $(subst :, ,$(TEST_FIRST))) \
	  && python lab/timing.py lanes --log-dir .cache/logs $(TEST_LANES) -- $(MAKE) --no-print-directory \
	  || status=$$?; python lab/timing.py report; exit $$status

# The READMEs' generated blocks (tests/docs/test_generated.py fails when one is stale).
docs: bootstrap
	python tests/docs/generate.py

lint: bootstrap
	yamllint --strict .
	ansible-lint --profile production
	ruff check .
	ruff check bridge
	tests/ansible-test.sh sanity

# The collection's unit tests (module plans, durations, the modules against a real influxd)
# run under ansible-test units, as a collection's do; the bridge's under its own pytest; then
# the C path's differential tests against an ASan+UBSan build of it (about a minute).
unit: bootstrap
	tests/ansible-test.sh units --num-workers 1
	pytest -n 2 --dist loadfile tests/roles tests/playbooks tests/lab tests/docs
	cd bridge && pytest --durations=15
	bridge/tests/sanitize.sh

# Faults at operator scale (InfluxDB down 30 s, central down 60 s, SIGKILL under load, spool
# cap, fuzzed input), each printing what it did and counted; about 5 minutes.
chaos: bootstrap
	cd bridge && pytest -rP chaos

# Prints one table of figures measured in this run and writes it to docs/benchmarks.md.
bench: image
	STATION_LAB_IMAGE=$(LAB_IMAGE) python lab/bench.py

# Every scenario, one after the other; `make test` runs them in three stages (molecule-a, -b, -c).
molecule: image
	STATION_LAB_IMAGE=$(LAB_IMAGE) molecule test --all

molecule-a: image molecule-lanes-check
	STATION_LAB_IMAGE=$(LAB_IMAGE) molecule test $(addprefix -s ,$(MOLECULE_A))

molecule-b: image molecule-lanes-check
	STATION_LAB_IMAGE=$(LAB_IMAGE) molecule test $(addprefix -s ,$(MOLECULE_B))

molecule-c: image molecule-lanes-check
	STATION_LAB_IMAGE=$(LAB_IMAGE) molecule test $(addprefix -s ,$(MOLECULE_C))

MOLECULE_SCENARIOS := $(sort $(patsubst molecule/%/molecule.yml,%,$(wildcard molecule/*/molecule.yml)))
molecule-lanes-check:
	@test "$(MOLECULE_SCENARIOS)" = "$(sort $(MOLECULE_LANES))" \
	  -a $(words $(MOLECULE_SCENARIOS)) = $(words $(MOLECULE_LANES)) \
	  || { echo "MOLECULE_A, _B and _C must name every scenario once: $(MOLECULE_SCENARIOS)"; exit 1; }

clean: station-down
	rm -rf .cache
