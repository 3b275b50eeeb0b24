from plugwarden.cli.main import main

raise SystemExit(main())
