#!/usr/bin/env python3
"""An independent Redfish client for Rivet's tests: OpenStack's sushy (Debian's
python3-sushy) reads or switches the one system of a BMC.

usage: sushy_bmc.py BASE_URL USER state|boot|reset RESET_TYPE
The password comes from the environment (RIVET_BMC_PASSWORD), never argv. The BMC's
certificate is self-signed: the Go test pins it; here it is not checked.
Prints one JSON object: {"power_state": ..., "boot_target": ..., "boot_enabled": ...}.
"""
import json
import os
import sys
import warnings

import sushy
import urllib3


def main():
    base_url, user, op = sys.argv[1], sys.argv[2], sys.argv[3]
    warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
    root = sushy.Sushy(base_url, username=user,
                       password=os.environ["RIVET_BMC_PASSWORD"], verify=False)
    system = root.get_system()
    if op == "reset":
        system.reset_system(sushy.ResetType(sys.argv[4]))
        system.refresh()
    elif op not in ("state", "boot"):
        sys.exit("unknown operation " + op)
    boot = system.boot
    print(json.dumps({
        "power_state": system.power_state.value if system.power_state else None,
        "boot_target": boot.target.value if boot.target else None,
        "boot_enabled": boot.enabled.value if boot.enabled else None,
    }))


if __name__ == "__main__":
    main()
