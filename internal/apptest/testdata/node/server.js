// Answers every request with the greeting its environment sets, from
// localhost (which may resolve to ::1 or 127.0.0.1), and logs each request.
const http = require("http");
const port = Number(process.env.PORT);
http
  .createServer((req, res) => {
    console.log(`${req.method} ${req.url}`);
    res.end(`${process.env.GREETING} (uid ${process.getuid()}, home ${process.env.HOME})\n`);
  })
  .listen(port, "localhost", () => console.log(`listening on localhost:${port}`));
