import tomllib

import pytest

from sostest import topology


def test_nine_regions_rules(tmp_path):
    t = topology.write(str(tmp_path), 9)
    rules = tomllib.loads((tmp_path / "statewide.toml").read_text())
    assert rules["listen"] == ["udp:127.0.0.1:5160"]
    ids = [x["id"] for x in rules["targets"]]
    assert len(ids) == 1 + 9 * 3 and len(set(ids)) == len(ids)
    assert len(rules["routes"]) == 9
    r3 = rules["routes"][2]
    assert r3["chain"] == ["psap-r03-a", "psap-r03-b", "business-line-r03"]
    assert r3["caller_prefixes"] == ["+155503"]
    psaps = [x for x in rules["targets"] if x["id"].startswith("psap-")]
    assert {x["failure_domain"] for x in psaps} == {topology.SHARED_DOMAIN}
    lines = [x for x in rules["targets"] if x["id"].startswith("business-line")]
    assert all(x["gateway"] == "pstn-gateway" and x["failure_domain"] == topology.PSTN_DOMAIN for x in lines)
    ports = [p["port"] for p in t.psaps] + [p["rtp_port"] for p in t.psaps]
    assert len(set(ports)) == len(ports)
    assert not {5060, 5071, 5072, 5073} & set(ports)
    assert t.roles()["psap-r09-a"] == "primary" and t.roles()["pstn-gateway"] == "gateway"


def test_domain_list_switch(tmp_path, monkeypatch):
    monkeypatch.setenv("STATEWIDE_DOMAIN_LIST", "1")
    topology.write(str(tmp_path), 2)
    rules = tomllib.loads((tmp_path / "statewide.toml").read_text())
    a = next(x for x in rules["targets"] if x["id"] == "psap-r02-a")
    assert a["failure_domain"] == ["psap-r02-a", topology.SHARED_DOMAIN]


def test_region_bounds_and_dispatcher():
    with pytest.raises(ValueError):
        topology.build(31)
    t = topology.build(30)
    lines = [x for x in topology.dispatcher_list(t).splitlines() if not x.startswith("#")]
    assert len(lines) == 90
    assert lines[-1].startswith("30 sip:127.0.0.1:15099 ") and "tel=+1555300100" in lines[-1]
    # the caller numbers the caller makes carry their region's set number at [5:7] (kamailio.cfg)
    assert t.regions[29]["prefix"][5:7] == "30"
