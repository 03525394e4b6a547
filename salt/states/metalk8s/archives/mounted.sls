{#- Mount every product archive (ISO) listed in the bootstrap configuration read-only under
    /srv/scality/<product>-<version>, checking the implanted MD5 first. #}
{%- set archives = salt['pillar.get']('metalk8s:archives', []) %}

{%- for archive in archives %}
{%-   set info = salt['file.read'](archive ~ '/product.txt') if archive.endswith('/') else {} %}
{%-   set mount_path = '/srv/scality/' ~ archive.split('/')[-1] | replace('.iso', '') %}

Check integrity of {{ archive }}:
  cmd.run:
    - name: checkisomd5 --verbose {{ archive }}
    - unless: test -d {{ archive }}

Mount {{ archive }}:
  mount.mounted:
    - name: {{ mount_path }}
    - device: {{ archive }}
    - fstype: iso9660
    - opts: ro,loop,nofail
    - persist: true
    - mkmnt: true
    - require:
      - cmd: Check integrity of {{ archive }}
{%- endfor %}
