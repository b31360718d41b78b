/**
 * JSON examples taken from the CNI specification texts, used as test tables. The 0.4.0 ones are copied
 * from SPEC.md at spec-v0.4.0 (including its DEL example with trailing commas, which is not JSON); the
 * 1.x ones follow the 1.0/1.1 SPEC.md examples (result, error, VERSION, plugin config with prevResult).
 */

/** SPEC 0.4.0, "Network configuration list runtime examples", the tuning plugin's ADD input. */
export const SPEC040_TUNING_ADD = `{
  "cniVersion": "0.4.0",
  "name": "dbnet",
  "type": "tuning",
  "sysctl": {
    "net.core.somaxconn": "500"
  },
  "prevResult": {
    "ips": [
        {
          "version": "4",
          "address": "10.0.0.5/32",
          "interface": 2
        }
    ],
    "interfaces": [
        {
            "name": "cni0",
            "mac": "00:11:22:33:44:55"
        },
        {
            "name": "veth3243",
            "mac": "55:44:33:22:11:11"
        },
        {
            "name": "eth0",
            "mac": "99:88:77:66:55:44",
            "sandbox": "/var/run/netns/blue"
        }
    ],
    "dns": {
      "nameservers": [ "10.1.0.1" ]
    }
  }
}`;

/** SPEC 0.4.0, the DEL example for tuning: as printed it has trailing commas, so it is not JSON. */
export const SPEC040_TUNING_DEL_AS_PRINTED = `{
  "cniVersion": "0.4.0",
  "name": "dbnet",
  "type": "tuning",
  "sysctl": {
    "net.core.somaxconn": "500"
  },
  "prevResult": {
    "ips": [
        {
          "version": "4",
          "address": "10.0.0.5/32",
          "interface": 2
        }
    ],
    "interfaces": [
        {
            "name": "cni0",
            "mac": "00:11:22:33:44:55",
        },
        {
            "name": "veth3243",
            "mac": "55:44:33:22:11:11",
        },
        {
            "name": "eth0",
            "mac": "99:88:77:66:55:44",
            "sandbox": "/var/run/netns/blue",
        }
    ],
    "dns": {
      "nameservers": [ "10.1.0.1" ]
    }
  }
}`;

/** SPEC 0.4.0, the first example configuration without its jsonc comments. */
export const SPEC040_BRIDGE = `{
  "cniVersion": "0.4.0",
  "name": "dbnet",
  "type": "bridge",
  "bridge": "cni0",
  "ipam": {
    "type": "host-local",
    "subnet": "10.1.0.0/16",
    "gateway": "10.1.0.1"
  },
  "dns": {
    "nameservers": [ "10.1.0.1" ]
  }
}`;

/** SPEC 1.x, section 5 "Result" example. */
export const SPEC1_RESULT = {
  cniVersion: '1.1.0',
  interfaces: [
    { name: 'cni0', mac: '00:11:22:33:44:55' },
    { name: 'veth3243', mac: '55:44:33:22:11:11' },
    { name: 'eth0', mac: '99:88:77:66:55:44', sandbox: '/var/run/netns/blue' },
  ],
  ips: [{ address: '10.1.0.5/16', gateway: '10.1.0.1', interface: 2 }],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: { nameservers: ['10.1.0.1'] },
};

/** SPEC 1.x, the tuning plugin's ADD input with the bridge plugin's result as prevResult. */
export const SPEC1_TUNING_ADD = `{
  "cniVersion": "1.1.0",
  "name": "dbnet",
  "type": "tuning",
  "sysctl": {
    "net.core.somaxconn": "500"
  },
  "runtimeConfig": {
    "mac": "00:11:22:33:44:66"
  },
  "prevResult": {
    "ips": [
        {
          "address": "10.1.0.5/16",
          "gateway": "10.1.0.1",
          "interface": 2
        }
    ],
    "routes": [
      {
        "dst": "0.0.0.0/0"
      }
    ],
    "interfaces": [
        {
            "name": "cni0",
            "mac": "00:11:22:33:44:55"
        },
        {
            "name": "veth3243",
            "mac": "55:44:33:22:11:11"
        },
        {
            "name": "eth0",
            "mac": "99:88:77:66:55:44",
            "sandbox": "/var/run/netns/blue"
        }
    ],
    "dns": {
      "nameservers": [ "10.1.0.1" ]
    }
  }
}`;

/** SPEC 1.x, the portmap plugin's ADD input: capabilities plus runtimeConfig.portMappings. */
export const SPEC1_PORTMAP_ADD = `{
  "cniVersion": "1.1.0",
  "name": "dbnet",
  "type": "portmap",
  "runtimeConfig": {
    "portMappings" : [
      { "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }
    ]
  },
  "prevResult": {
    "ips": [
        {
          "address": "10.1.0.5/16",
          "gateway": "10.1.0.1",
          "interface": 2
        }
    ],
    "routes": [
      {
        "dst": "0.0.0.0/0"
      }
    ],
    "interfaces": [
        {
            "name": "cni0",
            "mac": "00:11:22:33:44:55"
        },
        {
            "name": "veth3243",
            "mac": "55:44:33:22:11:11"
        },
        {
            "name": "eth0",
            "mac": "00:11:22:33:44:66",
            "sandbox": "/var/run/netns/blue"
        }
    ],
    "dns": {
      "nameservers": [ "10.1.0.1" ]
    }
  }
}`;

/** SPEC 1.1, GC input: the plugin config plus the attachments still in use. */
export const SPEC11_GC = `{
  "cniVersion": "1.1.0",
  "name": "dbnet",
  "type": "bridge",
  "bridge": "cni0",
  "cni.dev/valid-attachments": [
    {
      "containerID": "a1b2c3",
      "ifname": "eth0"
    }
  ],
  "ipam": {
    "type": "host-local",
    "subnet": "10.1.0.0/16",
    "gateway": "10.1.0.1"
  }
}`;

/** SPEC 1.x, the error example. */
export const SPEC1_ERROR = {
  cniVersion: '1.1.0',
  code: 7,
  msg: 'Invalid Configuration',
  details: 'Network 192.168.0.0/31 too small to allocate from.',
};
