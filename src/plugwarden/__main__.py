from plugwarden.cli import main

raise SystemExit(main())
