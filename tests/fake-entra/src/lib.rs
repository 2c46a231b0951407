//! A stateful fake of Microsoft Entra ID's login endpoints and the Graph `users` API.
