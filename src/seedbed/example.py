"""The commented seedbed.yaml that `seedbed init` writes (and the README's example)."""

EXAMPLE_CONFIG = """\
# seedbed.yaml: how seedbed bootstraps this cluster. `seedbed config schema` describes every key.
# yaml-language-server: $schema=seedbed.schema.json

cluster:
  name: homelab                 # recorded in backups; a restore checks it matches
  # kubeconfig: ~/.kube/config  # default: $KUBECONFIG, then ~/.kube/config
  # context: homelab-admin      # default: the current context

longhorn:
  version: v1.12.1
  # A stable path that every node provides by a bind mount (never a symlink: Longhorn's
  # manager cannot follow one), so that changing disks later is a node chore, not a config
  # change. Nodes need open-iscsi installed.
  dataPath: /var/lib/longhorn
  # backupTarget: s3://homelab-backups@us-east-1/longhorn
  # backupCredentials:
  #   fromEnv: {AWS_ACCESS_KEY_ID: LONGHORN_S3_KEY, AWS_SECRET_ACCESS_KEY: LONGHORN_S3_SECRET}
  defaultStorageClass: true
  replicaCount: 1               # 1 or 2 for clusters with fewer than 3 nodes

gitServer:
  flavor: gitea                 # or forgejo (same API)
  version: "1.27"               # the rootless image is always used
  namespace: gitea
  pvcName: gitea-shared-storage # the Gitea Helm chart's name: Flux's re-deploy reuses it
  httpService: gitea-http
  sshService: gitea-ssh

repo:
  owner: homelab
  ownerType: org                # or user
  name: gitops
  branch: main
  path: ./gitops                # the local git work tree that is pushed
  authorizedKeys: []            # e.g. [~/.ssh/id_ed25519.pub]: your keys, for git over SSH

flux:
  version: v2.9.3
  # path: clusters/homelab      # default clusters/<cluster name>
  # sops:                       # the keys Flux decrypts your SOPS-encrypted Secrets with
  #   ageKeyFiles: [~/.config/sops/age/keys.txt]   # and/or gpgKeyFiles: [flux.asc] (armored private key)
  #   ageSecret: sops-age       # the Secret in flux-system, as your Kustomizations' decryption.secretRef name it
  #   decryptRoot: true         # the flux-system Kustomization decrypts too

backup:
  recipients: []                # age1... or "ssh-ed25519 AAAA..."; `seedbed keygen` makes one
  # identityFile: ~/.config/seedbed/age.key
  # signingKey: ~/.config/seedbed/signing.key   # signs backups; default: signing.key beside identityFile
  # trustedSigners: []            # ssh-ed25519 keys restore trusts; default: your own signing key
  secrets:
    namespaces: []
    # labelSelector: seedbed.io/backup=true
  volumes: []                   # [{namespace: apps, pvc: data}]

certificates:
  acme: staging                 # production only once staging works: Let's Encrypt limits bite
  email: admin@example.org
  domain: example.org
  solver: dns01
  dns01:
    provider: cloudflare
    secretName: cloudflare-api-token
    secretKey: api-token
  # wildcard:
  #   domain: example.org
  #   namespace: ingress-nginx
"""
